"""Where LiteRT FP32 loses time against torch eager at full size: the fused graph's layer types one by one, each
converted alone with litert-torch and timed with the same threads in LiteRT (XNNPACK delegate, and the built-in
kernels without it) and in torch eager, in one run (a script, not a test):

    python benchmarks/litert_ops.py --threads 2 --runs 5 --out /tmp/litert_ops.json

Layers, at the shapes of DINOv3 ViT-L/16 @224 and FaRL-B + UPerHead @448 (seeded random weights):
  * `vit-l block`: one DINOv3 block (1024 wide, 201 tokens): 24 of them are DINOv3;
  * `farl block`: one FaRL ViT-B block (768 wide, 785 tokens): 12 of them are the parser backbone;
  * `fpn 3x3 conv 112²`: UPerHead's fpn_bottleneck (3072 -> 768, 3×3, 112²): ≈ 535 GFLOP, half the graph;
  * `3x3 conv 768 112²`: the finest fpn_conv (768 -> 768, 3×3, 112²);
  * `transposed conv 2x2`: FaRL's 4× upsampling neck (768 -> 768, kernel 2, stride 2, 28² -> 56²);
  * `... as nine 1x1`: the two 3x3 convolutions as the TFLite exporter writes them since (export/rewrite.py).
Per layer: GFLOPs, p50 of torch, LiteRT+XNNPACK and LiteRT built-in, the ratios, the GFLOP/s, and the LiteRT
graph's op types (a layout TRANSPOSE around a conv shows there). The host's CPU and ISA are recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


def layers() -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    """name -> (module, input shape): each the real kit module at full size."""
    from dfedge.export.rewrite import ShiftedConv2d
    from dfedge.models import dinov3 as dinov3_lib
    from dfedge.models import farl as farl_lib

    d = dinov3_lib.PRESETS["vitl16"]
    vit = dinov3_lib.DinoV3(d)
    block = vit.blocks[0]
    sin, cos = vit.rope_embed.sin, vit.rope_embed.cos

    class DinoBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = block
            self.register_buffer("sin", sin)
            self.register_buffer("cos", cos)

        def forward(self, x):
            return self.block(x, self.sin, self.cos)

    f = farl_lib.PRESETS["farl-b-lapa"]
    parser = farl_lib.FarlParser(f)
    out = {"vit-l block": (DinoBlock(), (1, d.num_prefix_tokens + d.grid**2, d.embed_dim)),
           "farl block": (parser.backbone.visual.transformer.resblocks[0], (1, 1 + f.grid**2, f.width))}
    out["fpn 3x3 conv 112²"] = (nn.Conv2d(4 * 768, 768, 3, padding=1, bias=False), (1, 4 * 768, 112, 112))
    out["3x3 conv 768 112²"] = (nn.Conv2d(768, 768, 3, padding=1, bias=False), (1, 768, 112, 112))
    # the same convolution as the TFLite exporter now writes it (dfedge.export.rewrite: nine shifted 1x1 GEMMs)
    out["3x3 conv 768 112² as nine 1x1"] = (ShiftedConv2d(nn.Conv2d(768, 768, 3, padding=1, bias=False)), (1, 768, 112, 112))
    out["fpn 3x3 conv 112² as nine 1x1"] = (ShiftedConv2d(nn.Conv2d(4 * 768, 768, 3, padding=1, bias=False)), (1, 4 * 768, 112, 112))
    out["transposed conv 2x2"] = (nn.ConvTranspose2d(768, 768, 2, stride=2), (1, 768, 28, 28))
    return out


def flops(module: nn.Module, x: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(x)
    return counter.get_total_flops() / 1e9


def timed(fn, runs: int) -> list[float]:
    fn()  # warm-up (XNNPACK packs its weights on the first call)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def op_types(path: Path) -> dict[str, int]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    counts: dict[str, int] = {}
    for op in interp._get_ops_details():
        counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--only", nargs="*", default=None, help="layer names to run (default: all)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    import litert_torch
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from dfedge.device.host import cpu_isa, cpu_model

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    rows = []
    work = Path(tempfile.mkdtemp(prefix="litert-ops-"))
    for name, (module, shape) in layers().items():
        if args.only and name not in args.only:
            continue
        module = module.eval()
        x = torch.randn(shape)
        with torch.no_grad():
            ref = module(x)
            t_torch = timed(lambda: module(x), args.runs)
        path = work / "layer.tflite"
        litert_torch.convert(module, (x,)).export(str(path))
        row = {"layer": name, "input": list(shape), "gflop": flops(module, x), "torch_s": t_torch,
               "tflite_ops": op_types(path)}
        for label, resolver in (("xnnpack", "AUTO"), ("builtin", "BUILTIN_WITHOUT_DEFAULT_DELEGATES")):
            interp = Interpreter(model_path=str(path), num_threads=args.threads,
                                 experimental_op_resolver_type=OpResolverType[resolver])
            run = interp.get_signature_runner()
            (source,) = interp.get_signature_list()["serving_default"]["inputs"]
            feed = {source: x.numpy()}
            out = run(**feed)
            row[f"{label}_max_abs"] = float(np.abs(next(iter(out.values())) - ref.numpy()).max())
            row[f"{label}_s"] = timed(lambda: run(**feed), args.runs)
        p50 = {k: float(np.median(row[f"{k}_s"])) for k in ("torch", "xnnpack", "builtin")}
        row.update(p50_s=p50, xnnpack_vs_torch=p50["xnnpack"] / p50["torch"], builtin_vs_torch=p50["builtin"] / p50["torch"],
                   gflops_per_s={k: row["gflop"] / v for k, v in p50.items()})
        rows.append(row)
        print(f"{name:22s} {row['gflop']:8.1f} GFLOP  torch {p50['torch']:.3f} s  LiteRT+XNNPACK {p50['xnnpack']:.3f} s "
              f"({row['xnnpack_vs_torch']:.2f}×)  built-in {p50['builtin']:.3f} s ({row['builtin_vs_torch']:.2f}×)  "
              f"ops {row['tflite_ops']}", flush=True)
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "cpu": cpu_model(), "isa": cpu_isa(),
              "threads": args.threads, "loadavg": os.getloadavg(), "torch": torch.__version__, "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    print(f"host: {result['cpu']}; ISA {', '.join(result['isa'])}; {args.threads} threads; load average {result['loadavg'][0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
