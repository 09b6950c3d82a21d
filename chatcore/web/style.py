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
/* The Data area: a profile card of column cards, each with its figures and a small histogram or top values. */
#data-progress, #data-profile, #data-chart, #data-narrative, #data-statistics { width: 100%; }
.profile-card .profile-title { font-weight: 600; font-size: 1rem; margin: 0.2em 0 0.5em; }
.data-notes { border: 1px solid #f59e0b; background: rgba(245, 158, 11, 0.08); border-radius: 8px;
              padding: 0.4em 0.8em; margin-bottom: 0.6em; font-size: 0.88rem; }
.data-notes ul { margin: 0.2em 0 0 1.2em; padding: 0; }
.column-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr)); gap: 0.6em; }
.column-card { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 0.55em 0.75em;
               background: var(--background-fill-primary); }
.column-card.warn { border-color: #f59e0b; }
.column-head { display: flex; justify-content: space-between; align-items: baseline; gap: 0.5em; }
.column-name { font-weight: 600; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.column-type { font-size: 0.72rem; padding: 0.05em 0.45em; border-radius: 999px; background: #e0e7ff; color: #3730a3;
               white-space: nowrap; }
.column-type.text { background: #fef3c7; color: #92400e; }
.column-type.temporal { background: #dcfce7; color: #166534; }
.column-type.boolean { background: #f3e8ff; color: #6b21a8; }
.column-counts { font-size: 0.8rem; opacity: 0.75; margin: 0.15em 0 0.35em; }
.column-counts .missing { color: #b45309; opacity: 1; font-weight: 600; }
.column-card .stats { display: grid; grid-template-columns: repeat(5, 1fr); gap: 0.2em; margin-bottom: 0.35em; }
.column-card .stats div { display: flex; flex-direction: column; }
.column-card .stats .label { font-size: 0.68rem; text-transform: uppercase; letter-spacing: 0.03em; opacity: 0.6; }
.column-card .stats .value { font-size: 0.82rem; font-variant-numeric: tabular-nums; }
.column-card .spark { display: block; margin-top: 0.2em; }
.column-warning { font-size: 0.78rem; color: #b45309; margin-top: 0.3em; }
.top-values { font-size: 0.8rem; }
.top-row { display: grid; grid-template-columns: minmax(0, 2fr) 3fr auto; gap: 0.4em; align-items: center;
           margin: 0.12em 0; }
.top-value { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.top-bar { height: 0.65em; background: var(--border-color-primary); border-radius: 0.3em; overflow: hidden; }
.top-bar span { display: block; height: 100%; background: #fbbf24; }
.top-n, .top-more { opacity: 0.7; font-variant-numeric: tabular-nums; }
.data-heading h4 { margin: 0.6em 0 0 0; }
#data-answer-line p { margin: 0.1em 0; }
.data-chart { max-width: 900px; display: block; }
.data-chart .bar:hover rect { fill: #3b82f6; }
.narrative { border-left: 3px solid #2563eb; padding: 0.3em 0.8em; margin: 0.3em 0; }
.narrative .text { white-space: pre-wrap; line-height: 1.45; }
.narrative mark.unverified { background: #fecaca; color: inherit; border-bottom: 2px dotted #dc2626; padding: 0 0.15em; }
.unverified-line, .verified-line { font-size: 0.82rem; margin-top: 0.3em; opacity: 0.9; }
.badge { font-size: 0.7rem; font-weight: 600; padding: 0.05em 0.5em; border-radius: 999px; text-transform: uppercase; }
.badge.unverified { background: #fee2e2; color: #991b1b; }
.badge.verified { background: #dcfce7; color: #166534; }
.data-statistics, .data-record { border-collapse: collapse; font-size: 0.86rem; margin: 0.3em 0; }
.data-statistics caption { text-align: left; font-weight: 600; padding-bottom: 0.2em; }
.data-statistics th, .data-statistics td, .data-record th, .data-record td {
  padding: 0.2em 0.9em 0.2em 0; text-align: left; border-bottom: 1px solid var(--border-color-primary); }
.data-statistics th, .data-record th { font-weight: 500; opacity: 0.75; }
.data-statistics td { font-variant-numeric: tabular-nums; }
/* Gradio's prose boxes every table cell; the record and statistics read as plain two-column lists. */
#data-record :is(table, tbody, tr, th, td), #data-statistics :is(table, tbody, tr, th, td) {
  border: none !important; background: none !important; }
#data-record :is(th, td), #data-statistics :is(th, td) {
  border-bottom: 1px solid var(--border-color-primary) !important; padding: 0.25em 1.2em 0.25em 0 !important; }
.data-record code { font-size: 0.8rem; word-break: break-all; }
.data-heatmap .chart-title { font-weight: 600; margin-bottom: 0.3em; }
.data-heatmap table { border-collapse: collapse; font-size: 0.85rem; }
.data-heatmap th { padding: 0.3em 0.6em; font-weight: 500; text-align: right; }
.data-heatmap thead th { text-align: center; }
.data-heatmap td.heat { min-width: 4.5em; text-align: center; padding: 0.45em 0.6em; font-variant-numeric: tabular-nums;
                        border: 1px solid var(--background-fill-primary); }
.data-heatmap td.strong { color: #fff; font-weight: 600; }
"""
