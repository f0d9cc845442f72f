"""The report's inline style sheet (no fonts or files fetched: system fonts only)."""

CSS = """
:root { --fg: #1d2330; --muted: #5b6475; --line: #dfe3ea; --bg: #f6f7f9; --accent: #2563eb;
        --truth: #16a34a; --pred: #dc2626; --other: #2563eb; --miss: #f59e0b; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--fg); background: var(--bg); }
header { background: #111827; color: #f9fafb; padding: 18px 28px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header .meta { color: #cbd5e1; font-size: 13px; }
header nav a { color: #93c5fd; margin-right: 14px; text-decoration: none; }
main { padding: 8px 28px 40px; max-width: 1400px; }
section.part { background: #fff; border: 1px solid var(--line); border-radius: 8px;
               padding: 8px 20px 20px; margin: 18px 0; }
h2 { font-size: 19px; margin: 12px 0; }
h3 { font-size: 15px; margin: 22px 0 8px; color: #111827; }
.cards { display: flex; flex-wrap: wrap; gap: 8px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 5px 9px; min-width: 74px;
        background: #fbfcfd; }
.card .value { font-size: 18px; font-weight: 600; font-variant-numeric: tabular-nums; }
.card .label { font-size: 12px; color: var(--muted); }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; margin: 4px 0; }
caption { text-align: left; color: var(--muted); font-size: 12px; padding: 2px 0 6px; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 9px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #eef1f5; position: sticky; top: 0; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th.asc::after { content: " \\25B2"; font-size: 10px; }
table.sortable th.desc::after { content: " \\25BC"; font-size: 10px; }
.scroll { max-height: 520px; overflow: auto; display: inline-block; max-width: 100%; }
.matrix td, .matrix th { padding: 2px 5px; font-size: 11px; min-width: 30px; text-align: center; }
.matrix th.row { text-align: right; }
.matrix th.colh { writing-mode: vertical-rl; transform: rotate(180deg); max-height: 120px; }
.toggle button { border: 1px solid var(--line); background: #fff; padding: 3px 10px;
                 cursor: pointer; border-radius: 4px; }
.toggle button.on { background: var(--accent); color: #fff; border-color: var(--accent); }
.chart { background: #fff; }
.chart text { font-size: 11px; fill: var(--muted); }
.row2 { display: flex; flex-wrap: wrap; gap: 36px; align-items: flex-start; }
.col { flex: 1 1 460px; min-width: 0; }
.col p.note { max-width: 560px; }
.gallery { display: flex; flex-wrap: wrap; gap: 10px; }
.gallery figure { margin: 0; width: 204px; border: 1px solid var(--line); border-radius: 6px;
                  padding: 5px; background: #fbfcfd; }
.gallery figure.wide { width: auto; }
.gallery img { display: block; max-width: 192px; max-height: 192px; margin: 0 auto;
               cursor: zoom-in; }
.gallery .panels { display: flex; gap: 4px; }
.gallery .panels img { max-width: 240px; max-height: 240px; }
.gallery figcaption { font-size: 11.5px; color: var(--muted); margin-top: 4px;
                      overflow-wrap: anywhere; }
.gallery figcaption b { color: var(--fg); }
.tag { display: inline-block; padding: 0 5px; border-radius: 3px; color: #fff;
       background: var(--pred); font-size: 11px; font-weight: 600; }
.tag.Miss { background: var(--miss); } .tag.Loc { background: #7c3aed; }
.tag.Cls { background: #db2777; } .tag.Both { background: #0891b2; }
.tag.Dupe { background: #64748b; } .tag.Bkg { background: #dc2626; }
.legend span { margin-right: 14px; font-size: 12px; }
.legend i { display: inline-block; width: 12px; height: 3px; vertical-align: middle;
            margin-right: 4px; }
p.note { color: var(--muted); max-width: 900px; }
p.warning { color: #92400e; background: #fffbeb; border: 1px solid #fde68a; padding: 6px 10px;
            border-radius: 6px; max-width: 900px; }
#lightbox { position: fixed; inset: 0; background: rgba(0,0,0,.82); display: none;
            align-items: center; justify-content: center; flex-direction: column; z-index: 9; }
#lightbox.open { display: flex; }
#lightbox img { max-width: 94vw; max-height: 86vh; background: #fff; }
#lightbox div { color: #e5e7eb; margin-top: 8px; }
select { padding: 3px 6px; }
"""
