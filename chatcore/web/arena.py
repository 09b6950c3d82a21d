"""The Chat tab's arena: two models answer the same message side by side, their names hidden until the vote;
four vote buttons once both answers have ended; a Bradley-Terry leaderboard and the votes as JSON Lines.

A mixin of :class:`chatcore.web.app.ChatApp`. Battles are not conversations: they never enter the sidebar.
Every handler passes the page's owner to the workspace's ``Arena``, which checks ownership itself: another
account's battle answers exactly like a missing one.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Iterator

import gradio as gr

from chatcore.services.evaluation.arena import VOTE_LABELS, ArenaView
from chatcore.web.chat import param_values
from chatcore.web.evaluate import model_spec_choices
from chatcore.web.handling import enabled, owner, user_errors
from chatcore.web.views import LEADERBOARD_HEADERS, answer_markdown, leaderboard_chart, leaderboard_rows, plain
from chatcore.web.workspace import StopSignal, Workspace

ARENA_EMPTY = ("**Arena.** Type a message below: two of the chosen models answer it side by side, their names "
               "hidden until you vote.")
WAITING = "*Waiting for the first words…*"
NO_VOTES = "No votes yet: vote on a battle to start the leaderboard."


def vote_buttons(view: ArenaView | None) -> tuple[gr.Button, ...]:
    """The four vote buttons: enabled only once both answers have ended and before the vote."""
    applies = view is not None and view.finished and view.vote is None
    return tuple(enabled(applies) for _ in VOTE_LABELS)


def pane(text: str, done: bool) -> str:
    """One side's answer as Markdown (a code fence left open is closed), or a waiting line."""
    if not text:
        return "*No answer.*" if done else WAITING
    return answer_markdown(text, "")


def names(view: ArenaView | None) -> tuple[str, str]:
    """Under each pane: nothing before the vote, the model's name after it."""
    if view is None or view.vote is None:
        return "", ""
    return (f"Model A was **{plain(view.model_a or '')}**", f"Model B was **{plain(view.model_b or '')}**")


def status_line(view: ArenaView) -> str:
    """What the battle waits for: the answers, the vote, or nothing (the vote shown)."""
    if view.vote is not None:
        return f"You voted: **{VOTE_LABELS[view.vote]}**. Send another message for a new battle."
    line = "Both answers are in: which is better?" if view.finished else "Answering…"
    return f"{line} Error: {plain(view.error)}" if view.error else line


class ArenaHandlers:
    """The arena area of the Chat tab and its leaderboard."""

    workspace: Workspace
    export_dir: Path
    owner = staticmethod(owner)

    @user_errors
    def toggle_arena(self, on: bool, request: gr.Request = None) -> tuple:
        """Arena on: its area stands in for the chat, and the models picker shows; off: the chat comes back."""
        models = gr.Dropdown(visible=bool(on), **({"choices": model_spec_choices(self.workspace, self.owner(request))}
                                                  if on else {}))
        return gr.Column(visible=bool(on)), gr.Column(visible=not on), models

    @staticmethod
    def _battle(view: ArenaView) -> tuple:
        """A battle's outputs: its id, the prompt line, both panes, the names, the votes, the status line."""
        return (view.battle_id, "**You:** " + plain(view.prompt), pane(view.answer_a, view.done_a),
                pane(view.answer_b, view.done_b), *names(view), *vote_buttons(view), status_line(view))

    @user_errors
    def arena_accept(self, text: str, models: list[str] | None, stop_signal: StopSignal,
                     request: gr.Request = None) -> tuple:
        """Check the message and the models and start a battle: the message box clears, the panes wait, Stop shows."""
        owner = self.owner(request)
        battle_id = self.workspace.arena.start(owner, text, list(models or []))
        stop_signal.clear()
        return (*self._battle(self.workspace.arena.battle(owner, battle_id)), "", gr.Button(visible=False),
                gr.Button(visible=True))

    @user_errors
    def arena_answer(self, battle_id: int | None, stop_signal: StopSignal, temperature: float, top_p: float,
                     top_k: float, max_new_tokens: float, repetition_penalty: float, seed: str,
                     request: gr.Request = None) -> Iterator[tuple]:
        """Stream both answers of the battle side by side; the names stay hidden until the vote."""
        if battle_id is None:
            raise gr.Error("Send a message in the arena first.")
        owner = self.owner(request)
        params = self.workspace.params(**param_values(temperature, top_p, top_k, max_new_tokens,
                                                      repetition_penalty, seed))
        shown_at = 0.0
        for view in self.workspace.arena.answer(owner, battle_id, params, cancel=stop_signal):
            now = time.monotonic()
            if view.finished or now - shown_at >= self.workspace.stream_interval:
                shown_at = now
                yield self._battle(view)

    @staticmethod
    def arena_done() -> tuple[gr.Button, gr.Button]:
        """A battle's answers ended (or were refused): Send back, Stop away."""
        return gr.Button(visible=True), gr.Button(visible=False)

    @staticmethod
    def stop_arena(stop_signal: StopSignal) -> None:
        stop_signal.set()

    @user_errors
    def arena_vote(self, battle_id: int | None, choice: str, request: gr.Request = None) -> tuple:
        """Record the vote and reveal both names; the vote buttons turn off."""
        if battle_id is None:
            raise gr.Error("Send a message in the arena first.")
        view = self.workspace.arena.vote(self.owner(request), battle_id, choice)
        return (*names(view), *vote_buttons(view), status_line(view))

    def vote_a(self, battle_id: int | None, request: gr.Request = None) -> tuple:
        return self.arena_vote(battle_id, "a", request)

    def vote_b(self, battle_id: int | None, request: gr.Request = None) -> tuple:
        return self.arena_vote(battle_id, "b", request)

    def vote_tie(self, battle_id: int | None, request: gr.Request = None) -> tuple:
        return self.arena_vote(battle_id, "tie", request)

    def vote_both_bad(self, battle_id: int | None, request: gr.Request = None) -> tuple:
        return self.arena_vote(battle_id, "both_bad", request)

    @user_errors
    def show_leaderboard(self, request: gr.Request = None) -> tuple:
        """The leaderboard: its line (``not enough votes yet (n of 10)`` below the threshold), the table, the chart
        (once there are enough votes), and the votes and ratings as a JSON Lines download."""
        from chatcore.services.notes import export_feedback

        owner = self.owner(request)
        board = self.workspace.arena.leaderboard(owner)
        rows = leaderboard_rows(board)
        line = board.message if rows else NO_VOTES
        if rows and not board.enough:
            line += ": scores appear once there are enough votes"
        path = Path(tempfile.mkdtemp(dir=self.export_dir)) / "chatcore-feedback.jsonl"
        count = export_feedback(self.workspace.store, owner, path)
        return (line, gr.Dataframe(value=rows, headers=LEADERBOARD_HEADERS, visible=bool(rows)),
                gr.HTML(leaderboard_chart(board) if board.enough and rows else "", visible=board.enough and bool(rows)),
                gr.DownloadButton(value=str(path) if count else None, interactive=bool(count)))

