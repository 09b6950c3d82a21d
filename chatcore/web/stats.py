"""The Stats tab's handler: the user's history as three charts, each with an empty state of its own."""

from __future__ import annotations

from typing import Any

import gradio as gr

from chatcore.web.handling import owner, user_errors
from chatcore.web.views import model_label
from chatcore.web.workspace import Workspace

# What each chart's empty state says, in the order the charts are laid out.
EMPTY = {
    "messages": "**Messages per day**: no messages yet. Ask something in the Chat tab.",
    "ratings": "**Rated answers per day**: no ratings yet. Like or dislike an answer (the thumbs under it).",
    "speed": "**Decoding speed by model**: no answers yet. The speed of each answer shows here.",
}


def stats_frames(stats: dict[str, list[dict[str, Any]]]) -> tuple[Any, Any, Any]:
    """``Workspace.stats`` as the charts' data frames: messages per day and role, ratings per day (up and
    down), and the mean tokens per second of each model."""
    import pandas as pd

    messages = pd.DataFrame(stats["messages"], columns=["day", "role", "messages"])
    ratings = pd.DataFrame(stats["ratings"], columns=["day", "up", "down"]).melt(
        id_vars="day", value_vars=["up", "down"], var_name="rating", value_name="answers")
    speed = pd.DataFrame(stats["speed"], columns=["model", "answers", "mean_tokens_per_s", "median_tokens_per_s"])
    speed = speed.rename(columns={"mean_tokens_per_s": "tokens_per_s"})
    speed["model"] = [model_label(m) for m in speed["model"]]
    ratings["day"] = pd.to_datetime(ratings["day"])  # a time axis; the bars keep one label per day
    return messages, ratings, speed[["model", "tokens_per_s"]]


class StatsHandlers:
    """The Stats tab."""

    workspace: Workspace
    owner = staticmethod(owner)

    @user_errors
    def show_stats(self, request: gr.Request = None) -> tuple:
        """Each chart with its data, or hidden behind its empty state when it has none."""
        frames = stats_frames(self.workspace.stats(self.owner(request)))
        plots = [gr.update(value=frame, visible=not frame.empty) for frame in frames]
        empties = [gr.Markdown(value=text, visible=frame.empty) for frame, text in zip(frames, EMPTY.values())]
        return (*plots, *empties)
