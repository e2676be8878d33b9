"""The SHAP waterfall of a credit response as a PNG.

Apart from ``credit.explain`` because it draws a finished :class:`CreditResponse`, which
``credit.score`` builds from ``credit.explain``'s reason codes: kept there it made the two
modules import each other.
"""

from __future__ import annotations

from pathlib import Path

from credit.score import CreditResponse


def plot_waterfall(response: CreditResponse, path: Path | str, *, top: int = 11) -> Path:
    """Write a SHAP waterfall of ``response`` as PNG: base value, one bar per feature, score."""
    import matplotlib

    matplotlib.use("Agg")  # headless: the CLI and the service have no display
    import matplotlib.pyplot as plt

    contribs = sorted(response.contributions, key=lambda c: abs(c.points), reverse=True)[:top]
    rest = sum(c.points for c in response.contributions) - sum(c.points for c in contribs)
    labels = [
        f"{c.feature} = {_fmt(c.value)}{'' if c.unit == '1' else ' ' + c.unit}"
        + ("" if c.observed else " (missing)")
        for c in contribs
    ]
    values = [c.points for c in contribs]
    if abs(rest) > 1e-9:
        labels.append("other features")
        values.append(rest)
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(values) + 2.0), dpi=110)
    running = response.base_value
    visited = [running]
    for i, v in enumerate(values):
        ax.barh(i, v, left=running, color="#2a9d8f" if v >= 0 else "#e76f51")
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
