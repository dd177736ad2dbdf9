"""SCALE-Sim v3 as a test oracle: run it on layers and record its per-layer answers.

SCALE-Sim is not an e2sim dependency. Install it in a separate virtualenv
(``python -m venv /tmp/ss && /tmp/ss/bin/pip install scalesim "numpy<2.4"``) and run

    /tmp/ss/bin/python tests/scalesim_oracle.py tests/data/scalesim_golden.json

to regenerate the golden data that tests/test_schedule.py compares e2sim against. The cases are
conv and GEMM layers on ws/os/is arrays of several sizes, including the GEMMs that the backward
ops of a training iteration map to.
"""

import contextlib
import csv
import io
import json
import os
import sys
import tempfile

from scalesim.scale_sim import scalesim

CFG = """[general]
run_name = oracle

[architecture_presets]
ArrayHeight : {rows}
ArrayWidth : {cols}
IfmapSramSzkB : {sram}
FilterSramSzkB : {sram}
OfmapSramSzkB : {sram}
IfmapOffset : 0
FilterOffset : 10000000
OfmapOffset : 20000000
Bandwidth : 10
Dataflow : {df}
ReadRequestBuffer : 32
WriteRequestBuffer : 32

[layout]
IfmapCustomLayout : False
IfmapSRAMBankBandwidth : 10
IfmapSRAMBankNum : 10
IfmapSRAMBankPort : 2
FilterCustomLayout : False
FilterSRAMBankBandwidth : 10
FilterSRAMBankNum : 10
FilterSRAMBankPort : 2

[sparsity]
SparsitySupport : false
SparseRep : ellpack_block
OptimizedMapping : false
BlockSize : 8
RandomNumberGeneratorSeed : 40

[run_presets]
InterfaceBandwidth : CALC
UseRamulatorTrace : False
"""


CONV_HEADER = "Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,"


def run(rows, cols, df, layers, gemm=False, sram=256):
    """SCALE-Sim's report tables for ``layers`` (conv rows, or GEMM (M, N, K) rows)."""
    with tempfile.TemporaryDirectory() as d:
        cfg, topo, layout = (os.path.join(d, name) for name in ("a.cfg", "t.csv", "layout.csv"))
        lines = ["Layer, M, N, K,"] if gemm else [CONV_HEADER]
        lines += [f"l{i}, " + ", ".join(str(v) for v in layer) + "," for i, layer in enumerate(layers)]
        for path, text in ((layout, "Layer name,\n"), (cfg, CFG.format(rows=rows, cols=cols, df=df, sram=sram)),
                           (topo, "\n".join(lines) + "\n")):  # fmt: skip
            with open(path, "w") as f:
                f.write(text)
        with contextlib.redirect_stdout(io.StringIO()):
            sim = scalesim(save_disk_space=True, verbose=False, config=cfg, topology=topo, layout=layout,
                           input_type_gemm=gemm)  # fmt: skip
            sim.run_scale(top_path=d)
        report = {}
        for name in ("COMPUTE_REPORT", "DETAILED_ACCESS_REPORT", "BANDWIDTH_REPORT"):
            with open(os.path.join(d, "oracle", name + ".csv")) as f:
                report[name] = [[c.strip() for c in row if c.strip() != ""] for row in csv.reader(f)]
        return report


ARRAYS = [(8, 8), (16, 16), (32, 32), (12, 14), (8, 32), (32, 8)]
CONVS = [  # IFMAP H, W (with padding), R, S, C, K, stride: LeNet-5, ResNet-20 and odd shapes
    (32, 32, 5, 5, 1, 6, 1), (14, 14, 5, 5, 6, 16, 1), (34, 34, 3, 3, 16, 16, 1), (33, 33, 3, 3, 16, 32, 2),
    (18, 18, 3, 3, 32, 32, 1), (16, 16, 1, 1, 16, 32, 2), (10, 10, 3, 3, 64, 64, 1), (9, 13, 3, 5, 7, 11, 2),
    (20, 20, 1, 1, 3, 100, 1),
]  # fmt: skip
GEMMS = [  # M, N, K: fully connected layers, and the backward ops of ResNet-20 convs at batch 2
    (64, 120, 400), (64, 10, 84), (2048, 144, 16), (16, 144, 2048), (512, 288, 32), (32, 288, 512),
    (128, 576, 64), (64, 576, 128), (7, 300, 45),
]  # fmt: skip


def main(out_path):
    cases = []
    for rows, cols in ARRAYS:
        for df in ("ws", "os", "is"):
            for gemm, layers in ((False, CONVS), (True, GEMMS)):
                report = run(rows, cols, df, layers, gemm=gemm)
                for i, layer in enumerate(layers):
                    compute = report["COMPUTE_REPORT"][1 + i]
                    detail = report["DETAILED_ACCESS_REPORT"][1 + i]
                    cases.append(
                        {
                            "rows": rows,
                            "cols": cols,
                            "dataflow": df,
                            "gemm" if gemm else "conv": list(layer),
                            "total_cycles": int(compute[2]),
                            "stall_cycles": int(compute[3]),
                            "sram_ifmap_reads": int(float(detail[3])),
                            "sram_filter_reads": int(float(detail[6])),
                            "sram_ofmap_writes": int(float(detail[9])),
                        }
                    )
            print(f"{rows}x{cols} {df}: {len(cases)} cases", file=sys.stderr)
    with open(out_path, "w") as f:
        json.dump({"scalesim": "3.0.0", "mode": "CALC", "cases": cases}, f, indent=0)


if __name__ == "__main__":
    main(sys.argv[1])
