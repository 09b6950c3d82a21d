"""``chatcore arena``: blind battles between two models from the terminal, votes, the leaderboard, export.

Glue only: :class:`chatcore.services.evaluation.arena.Arena` as the ``local`` user. Both answers are printed
as "Model A" and "Model B" (the sides drawn at random); the names are shown only once the vote is cast.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import click

from chatcore.cli.common import echo_json, json_option, open_store, storage_errors
from chatcore.cli.docs import ctrl_c_sets
from chatcore.cli.group import main
from chatcore.core.params import GenerationParams
from chatcore.core.settings import Settings, model_settings
from storage import LOCAL_OWNER
from storage.evaluation import VOTES

ARENA_GENERATION = {"max_new_tokens": 512, "temperature": 0.7}  # a chat answer, not an evaluation's short one


def open_arena(settings: Settings) -> Any:
    """The arena over the command's store; each model is loaded at first use and kept (a battle needs both)."""
    from chatcore.services.evaluation.arena import Arena

    loaded: dict[str, Any] = {}
    base = settings.with_overrides(compile="0")  # compiling costs a minute per start

    def backend_for(spec: str) -> Any:
        if spec not in loaded:
            from chatcore.engine.loader import load_backend

            click.echo("Loading a model…", err=True)  # which one stays hidden until the vote
            loaded[spec] = load_backend(model_settings(base, spec))
        return loaded[spec]

    return Arena(open_store(), backend_for)


def _settings() -> Settings:
    return click.get_current_context().find_object(Settings) or Settings()


def echo_answers(view: Any) -> None:
    for side, text in (("A", view.answer_a), ("B", view.answer_b)):
        click.echo(click.style(f"── Model {side} ──", bold=True))
        click.echo(text.strip() or "(no answer)")
        click.echo()


def echo_reveal(view: Any) -> None:
    from chatcore.services.evaluation.arena import VOTE_LABELS

    click.echo(f"Vote: {VOTE_LABELS[view.vote]}. Model A was {view.model_a}; Model B was {view.model_b} "
               f"(battle {view.battle_id}).")


def view_json(view: Any) -> dict[str, Any]:
    return view.to_dict()


@main.group()
def arena() -> None:
    """Blind battles: two models answer, you vote for the better answer, the leaderboard ranks them."""


@arena.command()
@click.argument("prompt")
@click.option("--model", "-m", "models", multiple=True, required=True, metavar="SPEC",
              help="A model (give two or more; two are drawn): default, a name or directory, e.g. default@quant=none.")
@click.option("--vote", type=click.Choice(VOTES), help="Vote without being asked (for scripts): a, b, tie or both_bad.")
@click.option("--max-tokens", "max_new_tokens", type=int, help="Most new tokens per answer (default 512).")
@click.option("--temperature", "-t", type=float, help="0 to 2 (default 0.7).")
@click.option("--seed", type=int, help="Random seed, for answers you can reproduce.")
@json_option
@storage_errors
def ask(prompt: str, models: tuple[str, ...], vote: str | None, max_new_tokens: int | None,
        temperature: float | None, seed: int | None, as_json: bool) -> None:
    """Two models answer PROMPT, shown as Model A and Model B; vote, then see which was which.

    Without --vote the command asks for the vote; an answer left without one keeps the battle for
    `chatcore arena vote BATTLE CHOICE`.
    """
    overrides = {"max_new_tokens": max_new_tokens, "temperature": temperature, "seed": seed}
    params = GenerationParams.create(**{**ARENA_GENERATION, **{k: v for k, v in overrides.items() if v is not None}})
    battles = open_arena(_settings())
    battle_id = battles.start(LOCAL_OWNER, prompt, models)
    cancel = threading.Event()
    view = None
    with ctrl_c_sets(cancel):
        click.echo(f"Battle {battle_id}: both models answer (Ctrl-C stops)…", err=True)
        for view in battles.answer(LOCAL_OWNER, battle_id, params, cancel=cancel):
            pass
    if view is None:
        raise click.ClickException("the battle ended without answers")
    if not as_json:
        echo_answers(view)
    if view.error:
        click.echo(f"warning: {view.error}", err=True)
    if cancel.is_set():
        click.echo(f"Stopped: battle {battle_id} is kept without a vote.", err=True)
        sys.exit(130)
    if vote is None and not as_json:
        try:
            vote = click.prompt("Which is better? [a/b/tie/both_bad]", type=click.Choice(VOTES), show_choices=False,
                                err=True)
        except click.Abort:
            click.echo(f"\nNo vote: vote later with: chatcore arena vote {battle_id} a|b|tie|both_bad", err=True)
            sys.exit(1)
    if vote is None:  # --json without --vote: the answers, names hidden, for a program to vote on later
        echo_json(view_json(view))
        return
    revealed = battles.vote(LOCAL_OWNER, battle_id, vote)
    if as_json:
        echo_json(view_json(revealed))
    else:
        echo_reveal(revealed)


@arena.command("vote")
@click.argument("battle_id", type=int, metavar="BATTLE")
@click.argument("choice", type=click.Choice(VOTES))
@json_option
@storage_errors
def vote_command(battle_id: int, choice: str, as_json: bool) -> None:
    """Vote on a battle left without one (a, b, tie or both_bad); the names are then shown."""
    from chatcore.services.evaluation.arena import Arena

    revealed = Arena(open_store(), lambda spec: None).vote(LOCAL_OWNER, battle_id, choice)
    if as_json:
        echo_json(view_json(revealed))
    else:
        echo_reveal(revealed)


@arena.command()
@click.option("--min-votes", type=click.IntRange(1), help="Votes needed before scores are shown as meaningful.")
@json_option
@storage_errors
def leaderboard(min_votes: int | None, as_json: bool) -> None:
    """Models by Bradley-Terry score (Chatbot Arena's scale) with bootstrap 95% intervals, from your votes."""
    from chatcore.services.evaluation.arena import Arena

    board = Arena(open_store(), lambda spec: None).leaderboard(
        LOCAL_OWNER, **({"min_votes": min_votes} if min_votes else {}))
    if as_json:
        echo_json(board.to_dict())
        return
    if not board.rows:
        click.echo('No votes yet. Start a battle with: chatcore arena ask "PROMPT" --model A --model B')
        return
    if not board.enough:
        click.echo(f"{board.message.capitalize()}: the scores below are not yet meaningful.")
    click.echo(f"{'RANK':>4}  {'SCORE':>6}  {'95% INTERVAL':13}  {'VOTES':>5}  {'WINS':>4}  MODEL")
    for rank, row in enumerate(board.rows, start=1):
        click.echo(f"{rank:>4}  {row.score:>6.0f}  {f'{row.low:.0f}–{row.high:.0f}':13}  {row.votes:>5}  "
                   f"{row.wins:>4}  {row.model}")
    if board.enough:
        click.echo(f"({board.message})")


@arena.command()
@json_option
@storage_errors
def battles(as_json: bool) -> None:
    """Your battles, oldest first: voted ones with the models' names, the others still hidden."""
    from chatcore.services.evaluation.arena import view_of
    from storage.evaluation import battles as stored_battles

    views = [view_of(b) for b in stored_battles(open_store(), LOCAL_OWNER)]
    if as_json:
        echo_json([view_json(v) for v in views])
        return
    if not views:
        click.echo('No battles yet. Start one with: chatcore arena ask "PROMPT" --model A --model B')
        return
    for v in views:
        who = f"{v.model_a} vs {v.model_b}, vote {v.vote}" if v.vote else "not voted yet"
        prompt = " ".join(v.prompt.split())
        click.echo(f"{v.battle_id:>5}  {who}: {prompt[:80]}")


@arena.command()
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@storage_errors
def export(output: Path) -> None:
    """Write every voted battle (both names, answers, records, the vote) to OUTPUT as JSON Lines.

    `chatcore feedback export` writes these too, after the rated answers.
    """
    import json

    from chatcore.services.evaluation.arena import Arena
    from chatcore.services.notes import atomic_file

    records = Arena(open_store(), lambda spec: None).export(LOCAL_OWNER)
    with atomic_file(output) as f:  # readers see the old file or the whole new one
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    click.echo(f"Exported {len(records)} vote{'s' if len(records) != 1 else ''} to {output}.")

