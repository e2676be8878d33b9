"""The SHAP waterfall of a credit response as a PNG.

Apart from ``credit.explain`` because it draws a finished :class:`CreditResponse`, which
``credit.score`` builds from ``credit.explain``'s reason codes: kept there it made the two
modules import each other.
"""

from __future__ import annotations

from pathlib import Path

from credit.labels import ADDS_COLOUR, REMOVES_COLOUR, contribution_colour, feature_label
from credit.score import CreditResponse


def waterfall_rows(response: CreditResponse, *, top: int = 11) -> tuple[list[str], list[float]]:
    """The bars, largest first: each a readable label (the dashboard's, ``credit.labels``) with
    its value and unit, and its points; the smaller rest summed as "N other features"."""
    contribs = sorted(response.contributions, key=lambda c: abs(c.points), reverse=True)[:top]
    rest_points = sum(c.points for c in response.contributions) - sum(c.points for c in contribs)
    labels = [
        f"{feature_label(c.feature)} = {_fmt(c.value)}{'' if c.unit == '1' else ' ' + c.unit}"
        + ("" if c.observed else " (missing)")
        for c in contribs
    ]
    values = [c.points for c in contribs]
    hidden = len(response.contributions) - len(contribs)
    if hidden and abs(rest_points) > 1e-9:
        labels.append(f"{hidden} other features")
        values.append(rest_points)
    return labels, values


def plot_waterfall(response: CreditResponse, path: Path | str, *, top: int = 11) -> Path:
    """Write a SHAP waterfall of ``response`` as PNG: base value, one bar per feature, score."""
    import matplotlib

    matplotlib.use("Agg")  # headless: the CLI and the service have no display
    import matplotlib.pyplot as plt

    labels, values = waterfall_rows(response, top=top)
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(values) + 2.0), dpi=110)
    running = response.base_value
    visited = [running]
    for i, v in enumerate(values):
        # The dashboard's colours (credit.labels): green adds points, red removes them.
        ax.barh(i, v, left=running, color=contribution_colour(v))
        end = running + v
        ax.text(max(running, end), i, f" {v:+.1f}", va="center", ha="left", fontsize=8)
        running = end
        visited.append(running)
    ax.set_yticks(range(len(values)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(response.base_value, color="grey", ls=":", lw=1, label="base value")
    if response.score is not None:  # a thin file has contributions but no number
        ax.axvline(response.score, color="black", lw=1, label="score")
    if response.gate is not None:
        visited.append(response.gate.threshold)
        ax.axvline(
            response.gate.threshold,
            color="#264653",
            ls="--",
            lw=1,
            label=f"gate {response.gate.threshold:g}",
        )
    # Zoom on the points that moved (the 0-100 scale would flatten small contributions).
    span = max(visited) - min(visited)
    ax.set_xlim(max(0.0, min(visited) - 0.1 * span - 1), min(100.0, max(visited) + 0.15 * span + 1))
    ax.barh([], [], color=ADDS_COLOUR, label="adds points")
    ax.barh([], [], color=REMOVES_COLOUR, label="removes points")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel(f"score points (base {response.base_value:.1f} -> score {response.score:.1f})")
    gate = f", {response.gate.policy}: {response.gate.outcome}" if response.gate else ""
    ax.set_title(
        f"{response.supplier_id}: {response.score:.1f} (band {response.band}){gate}\n"
        f"{response.model_version}",
        fontsize=9,
    )
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, format="png")
    plt.close(fig)
    return out


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.0f}"
