"""`dfedge report merge`: bench results from many devices -> one table (markdown + JSON) and a latency chart."""

from __future__ import annotations

import json
from pathlib import Path

from ..device.timing import RESULT_SCHEMA
from .benchmark import SET_SCHEMA

COLUMNS = ("device", "target", "precision", "region index", "status", "p50 ms", "p90 ms", "FPS", "× torch", "size MB",
           "ΔAUC pp", "flips", "mask agr.", "pack", "threads", "runtime")


def read_results(paths: list[Path]) -> list[dict]:
    """Results of bench.py (one per file) or of `dfedge bench --json` (a set: references + results)."""
    out = []
    for path in map(Path, paths):
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"{path}: no such file") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not JSON ({e.msg}, line {e.lineno})") from None
        schema = data.get("schema") if isinstance(data, dict) else None
        if schema == RESULT_SCHEMA:
            out.append(data)
        elif schema == SET_SCHEMA:
            out += [r for r in data.get("references") or [] if r] + list(data["results"])
        else:
            raise ValueError(f"{path}: schema {schema!r}, expected {RESULT_SCHEMA} or {SET_SCHEMA}")
    return out


def device_label(result: dict) -> str:
    facts = result.get("facts") or {}
    return facts.get("label") or facts.get("host") or "unknown device"


def rows(results: list[dict]) -> list[dict]:
    """One row per device × target × precision × region index, sorted; the last result wins for duplicates."""
    merged: dict[tuple, dict] = {}
    for r in results:
        lat, val = r.get("latency_ms") or {}, r.get("validation") or {}  # val: bench.py --validate on that device
        row = {"device": device_label(r), "target": r.get("target", "?"), "precision": r.get("precision", "?"),
               "region index": r.get("region_index", "exact"), "status": r.get("status", "?"),
               "reason": r.get("reason", ""), "p50 ms": lat.get("p50"), "p90 ms": lat.get("p90"), "FPS": r.get("fps"),
               "× torch": r.get("speedup_vs_torch"), "size MB": r.get("size_mb"), "threads": r.get("threads"),
               "ΔAUC pp": val["delta_auc"] * 100 if val else None, "flips": val.get("flip_rate"),
               "mask agr.": val.get("mask_agreement"), "pack": val.get("crops"),
               "runtime": f"{(r.get('facts') or {}).get('runtime', '')} {(r.get('facts') or {}).get('runtime_version') or ''}".strip()}
        merged[(row["device"], row["target"], row["precision"], row["region index"])] = row
    return [merged[k] for k in sorted(merged)]


def cell(row: dict, col: str) -> str:
    value = row[col]
    if col == "status":
        return "ok" if value == "ok" else f"{value}: {row['reason']}"[:80]
    if value is None:
        return "-"
    if isinstance(value, float):
        return {"× torch": f"{value:.2f}×", "ΔAUC pp": f"{value:+.2f}", "flips": f"{value:.1%}",
                "mask agr.": f"{value:.4f}"}.get(col, f"{value:.2f}")
    return str(value)


def markdown(table: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r, c) for c in COLUMNS) + " |" for r in table]
    return "\n".join(lines)


def chart(table: list[dict], path: Path) -> None:
    """p50 latency per model (target-precision[-rung]), one bar colour per device, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ok = [r for r in table if r["status"] == "ok" and r["p50 ms"]]
    if not ok:
        raise ValueError("no successful bench result to chart")
    models = sorted({model_name(r) for r in ok})
    devices = sorted({r["device"] for r in ok})
    height = 0.8 / len(devices)
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.45 * len(models) * max(1, len(devices) / 2)))
    for d, device in enumerate(devices):
        values = {model_name(r): r["p50 ms"] for r in ok if r["device"] == device}
        ys = np.arange(len(models)) + d * height
        ax.barh(ys, [values.get(m, 0) for m in models], height=height, label=device)
    ax.set_yticks(np.arange(len(models)) + 0.4 - height / 2, models)
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency per face, ms (log scale)")
    ax.invert_yaxis()
    ax.legend(fontsize=8, loc="best")
    ax.set_title("dfedge bench: latency by device, target and precision")
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")  # atomic_write hands a .tmp path
    plt.close(fig)


def model_name(row: dict) -> str:
    rung = "" if row["region index"] == "exact" else f"-{row['region index']}"
    return f"{row['target']}-{row['precision']}{rung}"


def merge(paths: list[Path], out: Path) -> tuple[list[dict], dict[str, Path]]:
    """Write out/merged.md, out/merged.json and out/latency.png; return the rows and the written paths."""
    from ..models.writing import atomic_write

    table = rows(read_results(paths))
    out.mkdir(parents=True, exist_ok=True)
    files = {"markdown": out / "merged.md", "json": out / "merged.json", "chart": out / "latency.png"}
    sources = ", ".join(f"`{Path(p).name}`" for p in paths)
    atomic_write(files["markdown"], lambda t: t.write_text(
        f"# Latency and accuracy across devices\n\nMerged from {sources}. × torch: speed-up over torch FP32 eager on the "
        f"same device in the same run. ΔAUC, flips and mask agreement: the bundle's validation pack (`pack` crops) "
        f"scored on that device by `bench.py --validate`, against the torch FP32 reference's scores it carries.\n\n{markdown(table)}\n\n![latency](latency.png)\n"))
    atomic_write(files["json"], lambda t: t.write_text(json.dumps(table, indent=2)))
    atomic_write(files["chart"], lambda t: chart(table, t))
    return table, files
