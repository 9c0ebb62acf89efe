"""Why the OpenVINO INT8 rung's gate verdict depends on the CPU: the toy detector's static INT8 IR, quantized by NNCF
with each overflow-fix setting, scored on toy:val:200 with the CPU kernels this host picks natively and with oneDNN
held to AVX2 (ONEDNN_MAX_CPU_ISA=AVX2: the kernels of a CPU without AVX-512/VNNI, which multiply u8 x s8 pairs into
saturating 16-bit sums). Prints ΔAUC against torch FP32 per (overflow fix, ISA) and the GEMM kernels compiled.

    python benchmarks/isa_int8.py [--data toy:val:200] [--calib-size 300]

Each ISA runs in its own process (oneDNN reads the variable once). ONNX Runtime's MLAS picks its INT8 kernel by
CPUID with no override, so its AVX2 path cannot be reproduced on a VNNI host; this script measures OpenVINO only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

CHILD = r"""
import json, sys, numpy as np, openvino as ov
from collections import Counter
from sklearn.metrics import roc_auc_score
folder, names = sys.argv[1], sys.argv[2:]
with np.load(f"{folder}/val.npz") as z:
    images, labels, reference = z["images"], z["labels"], z["reference"]
core, out = ov.Core(), {}
for name in names:
    compiled = core.compile_model(f"{folder}/{name}.xml", "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    logits = np.array([float(np.ravel(request.infer({0: x[None].astype(np.float32)})[compiled.output("logit")])[0])
                       for x in images])
    infos = [{k: v.value for k, v in op.get_rt_info().items()} for op in compiled.get_runtime_model().get_ordered_ops()]
    kernels = Counter(i["primitiveType"] for i in infos if i["layerType"] in ("FullyConnected", "Convolution", "MatMul"))
    out[name] = {"auc": roc_auc_score(labels, logits), "reference_auc": roc_auc_score(labels, reference),
                 "kernels": dict(kernels.most_common(4))}
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="toy:val:200")
    ap.add_argument("--calib-size", type=int, default=300)
    args = ap.parse_args()

    import nncf
    import openvino as ov
    import torch
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    from dfedge.data.calibration import calibration_set
    from dfedge.data.sources import open_set, toy_crops
    from dfedge.export import openvino as ov_export
    from dfedge.export.job import Job
    from dfedge.models.factory import DetectorSpec, build_detector
    from dfedge.quantize.openvino import ignored_scope
    from dfedge.device.host import cpu_isa, cpu_model
    from dfedge.targets import TARGETS

    spec = DetectorSpec()
    detector = build_detector(spec).eval()
    data = open_set(args.data, spec.region)
    images = np.stack([data[i].image.transpose(2, 0, 1) for i in range(len(data))])
    with torch.no_grad():
        out = [detector(torch.from_numpy(x[None].astype(np.float32))) for x in images]
    reference = np.array([float(o[0].ravel()[0]) for o in out])
    found = np.array([float(o[3].ravel()[0]) > 0 for o in out])  # region_tokens: the gate scores these only
    calib = calibration_set("toy", args.calib_size, spec.region)
    job = Job(detector, TARGETS["openvino"], "int8", "toy", "isa", {}, {}, toy_crops(1), calibration=calib)
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(f"{tmp}/val.npz", images=images[found], labels=data.labels()[found], reference=reference[found])
        names = []
        for fix in (OverflowFix.DISABLE, OverflowFix.FIRST_LAYER, OverflowFix.ENABLE):
            model = nncf.quantize(ov_export.converted(job), nncf.Dataset(calib.items()), model_type=nncf.ModelType.TRANSFORMER,
                                  ignored_scope=ignored_scope(), subset_size=len(calib.images),
                                  advanced_parameters=AdvancedQuantizationParameters(overflow_fix=fix))
            ov.save_model(model, f"{tmp}/{fix.value}.xml")
            names.append(fix.value)
        print(f"host: {cpu_model()} ({', '.join(cpu_isa())}); openvino {ov.__version__}, nncf {nncf.__version__}; "
              f"{args.data}: {int(found.sum())} crops with a region; calibration {args.calib_size} toy crops\n")
        print("| overflow fix | ISA (oneDNN) | ΔAUC pp vs torch FP32 | GEMM kernels compiled |\n|---|---|---|---|")
        for isa in ("native", "AVX2"):
            env = dict(os.environ, **({"ONEDNN_MAX_CPU_ISA": isa} if isa != "native" else {}))
            proc = subprocess.run([sys.executable, "-c", CHILD, tmp, *names], env=env, capture_output=True, text=True)
            if proc.returncode:
                sys.exit(proc.stderr)
            for name, r in json.loads(proc.stdout.strip().splitlines()[-1]).items():
                kernels = ", ".join(f"{k} ×{n}" for k, n in r["kernels"].items())
                print(f"| {name} | {isa} | {(r['auc'] - r['reference_auc']) * 100:+.2f} | {kernels} |")


if __name__ == "__main__":
    main()
