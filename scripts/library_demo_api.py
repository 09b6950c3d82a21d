"""The library demonstration questions through the API with the official openai client:

    python scripts/library_demo_api.py http://127.0.0.1:7860/v1
"""
import json
import sys

from openai import OpenAI

client = OpenAI(base_url=sys.argv[1], api_key="none")
QUESTIONS = [
    ("What is the default weight of a glob pattern, and what is the maximum?", "shared-mime-info-spec.pdf", 4),
    ("Are glob patterns matched case-insensitively?", "shared-mime-info-spec.pdf", 7),
    ("Under which license can the libtasn1 library be redistributed?", "libtasn1.pdf", 4),
    ("What does asn1Coding generate?", "libtasn1.pdf", 8),
    ("Which encoding rules does libtasn1 implement?", "libtasn1.pdf", 4),
]
for question, gold_file, gold_page in QUESTIONS:
    reply = client.chat.completions.create(model="smollm2-135m-instruct", temperature=0, max_tokens=80,
                                           messages=[{"role": "user", "content": question}],
                                           extra_body={"chatcore": {"library": "all"}})
    ext = reply.model_extra["chatcore"]
    gold_rank = next((s["n"] for s in ext["sources"] if (s.get("document") or s.get("filename")) == gold_file and s["page"] == gold_page), None)
    print(json.dumps({"question": question, "answer": reply.choices[0].message.content[:300],
                      "gold": f"{gold_file} p.{gold_page}", "gold_source_n": gold_rank,
                      "sources": [f"[{s['n']}] {s.get('document') or s.get('filename')} p.{s['page']}" for s in ext["sources"]],
                      "citations": [{k: c[k] for k in ("n", "kind", "document", "page", "verified")} for c in ext["citations"]]},
                     ensure_ascii=False))
ev = client.chat.completions.create(model="smollm2-135m-instruct", messages=[{"role": "user", "content": QUESTIONS[1][0]}],
                                    extra_body={"chatcore": {"library": "all", "evidence": True}})
print("EVIDENCE:", ev.choices[0].message.content[:600])
