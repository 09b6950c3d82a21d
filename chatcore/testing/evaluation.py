"""A small test set that tests of evaluation share: two multiple-choice items and three short answers."""

from __future__ import annotations

import json

SCIENCE_ITEMS = [
    {"id": "q1", "question": "Which gas do plants take in for photosynthesis?",
     "choices": ["oxygen", "carbon dioxide", "helium", "neon"], "answer": "B", "tags": ["biology"]},
    {"id": "q2", "question": "What is the chemical symbol of sodium?", "answers": ["Na"], "tags": ["chemistry"]},
    {"id": "q3", "question": "How many planets orbit the Sun?", "answer": "8", "tags": ["astronomy"]},
    {"id": "q4", "question": "Which particle has a negative charge?",
     "choices": ["proton", "neutron", "electron"], "gold": 2, "tags": ["physics"]},
    {"id": "q5", "question": "What is frozen water called?", "answers": ["ice"], "tags": ["physics"]},
]
SCIENCE_JSONL = "\n".join(json.dumps(item) for item in SCIENCE_ITEMS) + "\n"
