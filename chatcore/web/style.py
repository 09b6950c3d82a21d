"""The page's look: its CSS (icons drawn without any font), the security header, LaTeX delimiters."""

from __future__ import annotations

LATEX = [
    {"left": "$$", "right": "$$", "display": True},
    {"left": "\\[", "right": "\\]", "display": True},
    {"left": "\\(", "right": "\\)", "display": False},
    {"left": "$", "right": "$", "display": False},
]
# Nothing in a message may reach another host: no remote images (tracking pixels), frames or forms.
HEAD = (
    "<meta http-equiv=\"Content-Security-Policy\" content=\"img-src 'self' data: blob:; media-src 'self' data: blob:; "
    "frame-src 'none'; object-src 'none'; form-action 'self'; base-uri 'self'\">"
)
# Icons are CSS shapes, never emoji: a machine without an emoji font (headless Chromium, many Linux
# desktops) draws emoji as empty boxes.
CSS = """
#chat-title textarea, #chat-title input { font-size: 1.15rem; font-weight: 600; }
#conversations { max-height: calc(100vh - 330px); overflow-y: auto; }
#conversations label { width: 100%; }
#model-status, #context-line, #pinned-line { font-size: 0.85rem; opacity: 0.85; }
.message sub { opacity: 0.7; }
/* A refused action leaves the page as it was, and its toast says why. Gradio also covers each of the
   event's outputs with an "Error" badge on white: a refused message hid the whole conversation. */
.wrap:has(> .error) { display: none !important; }
/* The model status: a dot, grey while loading, green when ready, red when the load failed. */
.status-dot { display: inline-block; width: 0.6em; height: 0.6em; border-radius: 50%; margin-right: 0.3em;
              vertical-align: baseline; background: #9ca3af; }
.status-dot.loading { animation: status-pulse 1s ease-in-out infinite alternate; }
.status-dot.ready { background: #16a34a; }
.status-dot.failed { background: #dc2626; }
@keyframes status-pulse { from { opacity: 0.3; } to { opacity: 1; } }
/* "New chat" and "New note" get a plus drawn by two bars. */
#new-chat::before, #note-new::before {
  content: ""; display: inline-block; width: 0.7em; height: 0.7em; margin-right: 0.4em;
  background: linear-gradient(currentColor, currentColor) center / 100% 2px no-repeat,
              linear-gradient(currentColor, currentColor) center / 2px 100% no-repeat;
}
/* The sidebar's empty state, worded for a first visit or for a search that found nothing. */
#conversations:not(:has(label))::after { content: "No conversations yet. Ask something to start one.";
                                          display: block; padding: 0.5em; opacity: 0.7; font-size: 0.9rem; }
#history-panel:has(#search :is(input, textarea):not(:placeholder-shown)) #conversations:not(:has(label))::after {
  content: "No conversation matches this search."; }
.empty-state { opacity: 0.8; padding: 1em; border: 1px dashed var(--border-color-primary); border-radius: 8px; }
button:disabled, button[disabled] { cursor: not-allowed; opacity: 0.5; }
/* The library: an indexing job's bar, ranked passages, and a source on its page. */
.library-progress { width: 100%; }
.library-progress .bar { height: 0.7em; border-radius: 0.35em; background: var(--border-color-primary); overflow: hidden; }
.library-progress .fill { height: 100%; background: #2563eb; transition: width 0.3s; }
.library-progress.done .fill { background: #16a34a; }
.library-progress.cancelled .fill, .library-progress.failed .fill { background: #dc2626; }
.library-progress .line { font-size: 0.85rem; opacity: 0.85; margin-top: 0.25em; }
.passage { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 0.6em 0.8em; margin: 0.4em 0; }
.passage .where, #source-page .where { font-weight: 600; font-size: 0.9rem; margin-bottom: 0.3em; }
.passage .text, .source-page { white-space: pre-wrap; font-size: 0.9rem; line-height: 1.45; }
.source-page { max-height: 520px; overflow-y: auto; padding: 0.6em; border: 1px solid var(--border-color-primary);
               border-radius: 8px; }
.passages { max-height: 560px; overflow-y: auto; }
.passage mark, .source-page mark { background: #fde68a; color: inherit; padding: 0 0.1em; border-radius: 2px; }
/* Evaluation: the run's bar is the library's; the chart is inline SVG in the page's own colours. */
#eval-progress, #eval-chart, #arena-board-chart { width: 100%; }
.interval-chart { max-width: 900px; display: block; }
.interval-chart .bar:hover rect { fill: #3b82f6; }
#eval-set-message p, #eval-items-line p { margin: 0.2em 0; }
/* The arena: two panes of equal height side by side, the names under them once the vote is cast. */
.arena-pane { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 0.6em 0.9em;
              min-height: 14em; }
.arena-pane .arena-title h4 { margin: 0 0 0.3em 0; }
.arena-answer { max-height: 50vh; overflow-y: auto; }
.arena-name { font-size: 0.95rem; }
#arena-votes button { flex: 1; }
"""
