"""Plotly figures for the workbench: scope heatmap, per-token NLL, training curves."""

from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go

from searc.editor import ProbeResult, TargetComparison
from searc.inspection import OutputTokens
from searc.memory import Edit


MARGIN = {"l": 10, "r": 10, "t": 50, "b": 10}  # every figure's: room for its title, little else


def _short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _placeholder(title: str, note: str, height: int) -> go.Figure:
    """An empty chart that says what will fill it, with no axes to read meaning into."""
    figure = go.Figure()
    figure.update_layout(
        title=title, height=height, xaxis={"visible": False}, yaxis={"visible": False},
        annotations=[{"text": note, "showarrow": False, "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5, "font": {"size": 14, "color": "#6b7280"}}],
        margin=MARGIN,
    )
    return figure


def scope_heatmap(results: Sequence[ProbeResult], edits: Sequence[Edit], threshold: float) -> go.Figure:
    """Probes x edits classifier scores; cells at or above the threshold are marked."""
    if not edits:
        return _placeholder("Scope classifier scores", "no edits stored: add one, and every probe is scored against it", 220)
    if not results:
        return _placeholder("Scope classifier scores", "no probes yet: type some and press Probe", 220)
    figure = go.Figure()
    z = [[result.scores.get(edit.id, 0.0) for edit in edits] for result in results]
    text = [[f"{v:.2f}{' ✓' if v >= threshold else ''}" for v in row] for row in z]
    figure.add_trace(
        go.Heatmap(
            z=z,
            x=[f"{e.id}: {_short(e.prompt, 28)}" for e in edits],
            y=[_short(r.prompt) for r in results],
            zmin=0.0,
            zmax=1.0,
            colorscale="Blues",
            text=text,
            texttemplate="%{text}",
            hovertemplate="probe: %{y}<br>edit: %{x}<br>score: %{z:.3f}<extra></extra>",
            colorbar={"title": "score"},
        )
    )
    figure.update_layout(
        title=f"Scope classifier scores (✓ = at or above threshold {threshold:.2f})",
        height=max(240, 60 + 40 * len(results)),
        yaxis={"autorange": "reversed"},
        margin=MARGIN,
    )
    return figure


def nll_chart(comparisons: Sequence[TargetComparison]) -> go.Figure:
    """Per-token NLL of each target after one probe: base model vs edited system, bars side by side."""
    if not comparisons:
        return _placeholder("Per-token NLL (nats): base model vs edited system", "pick a probe above, then score targets", 360)
    labels = [f"{_short(c.target, 20)} · {t.strip() or repr(t)}" for c in comparisons for t in c.tokens]
    base = [v for c in comparisons for v in c.base_nll]
    edited = [v for c in comparisons for v in c.edited_nll]
    routed = any(c.routed for c in comparisons)
    figure = go.Figure(
        [
            go.Bar(name="base model", x=labels, y=base, marker_color="#9aa5b1"),
            go.Bar(name="edited system" + (" (routed)" if routed else " (not routed: = base)"), x=labels, y=edited, marker_color="#1f6feb"),
        ]
    )
    prompt = _short(comparisons[0].prompt, 60)
    figure.update_layout(
        title=f"Per-token NLL (nats) after “{prompt}”: base model vs edited system",
        barmode="group",
        height=360,
        yaxis={"title": "NLL"},
        xaxis={"title": "target · token"},
        margin=MARGIN,
    )
    return figure


def training_curves(steps: Sequence[int], losses: dict[str, Sequence[float]], val_steps: Sequence[int], metrics: dict[str, Sequence[float]]) -> go.Figure:
    """Training losses (left) and validation metrics (right axis) against steps."""
    figure = go.Figure()
    for name, values in losses.items():
        figure.add_trace(go.Scatter(x=list(steps), y=list(values), name=name, mode="lines"))
    for name, values in metrics.items():
        figure.add_trace(go.Scatter(x=list(val_steps), y=list(values), name=f"val {name}", mode="lines+markers", yaxis="y2"))
    figure.update_layout(
        title="Training",
        height=380,
        xaxis={"title": "step"},
        yaxis={"title": "loss"},
        yaxis2={"title": "validation", "overlaying": "y", "side": "right", "range": [0, 1.05]},
        margin=MARGIN,
    )
    return figure


def evaluation_bars(rows: dict[str, dict[str, float]]) -> go.Figure:
    """Grouped bars: one group per metric, one bar per system (e.g. unedited, zero-shot, trained)."""
    figure = go.Figure()
    for system, metrics in rows.items():
        figure.add_trace(go.Bar(name=system, x=list(metrics), y=list(metrics.values()), text=[f"{v:.2f}" for v in metrics.values()]))
    figure.update_layout(
        title="Edit success (greedy generation)", barmode="group", height=360, yaxis={"range": [0, 1.05]},
        margin=MARGIN,
    )
    return figure


def token_strips(strips: Sequence[OutputTokens]) -> go.Figure:
    """Each output as a strip of tokens coloured by NLL under the model that produced it; hover for
    the other model's NLL of the same token and the top alternatives at that position."""
    if not strips:
        return _placeholder("Token view", "probe first, then pick a probe", 160)
    figure = go.Figure()
    width = max(len(s.tokens) for s in strips)

    def hover(strip: OutputTokens, t) -> str:
        other = f"<br>{strip.other}: {t.other_nll:.2f} nats" if t.other_nll is not None else ""
        top = "<br>".join(f"&nbsp;&nbsp;{a!r}: {p:.1%}" for a, p in t.alternatives)
        return f"token {t.text!r}<br>{strip.producer}: {t.nll:.2f} nats{other}<br>top alternatives:<br>{top}"

    pad = [None] * width
    figure.add_trace(
        go.Heatmap(
            z=[([t.nll for t in s.tokens] + pad)[:width] for s in strips],
            text=[([t.text.replace("\n", "⏎") for t in s.tokens] + [""] * width)[:width] for s in strips],
            hovertext=[([hover(s, t) for t in s.tokens] + [""] * width)[:width] for s in strips],
            y=[f"{s.name} ({s.producer})" for s in strips],
            texttemplate="%{text}",
            hoverinfo="text",
            colorscale="Reds",
            zmin=0.0,
            colorbar={"title": "NLL (nats)"},
            xgap=2,
            ygap=6,
        )
    )
    figure.update_layout(
        title="Output tokens, coloured by NLL under the model that produced them (hover: other model, top-5)",
        height=120 + 70 * len(strips),
        yaxis={"autorange": "reversed"},
        xaxis={"title": "token position", "dtick": 1},
        margin=MARGIN,
    )
    return figure
