"""e2sim's mappings against AccelForge and ZigZag on the architectures and layers of
tests/data/oracle_arches.yaml (recordings in tests/data; see tests/oracles/): DRAM bits and energy
under the same per-bit energies, as a markdown table. Goal: DRAM ≤ 1.05 × the oracle's, energy
≤ 1.1 × (within 10% or lower).

    python benchmarks/oracle_comparison.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "oracles"))
import compare


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        rows = compare.comparison(Path(folder))
    print("| oracle | architecture | layer | oracle DRAM (KB) | e2sim / oracle DRAM | oracle energy (µJ) "
          "| e2sim / oracle energy |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        theirs = r["oracle_result"]
        print(f"| {r['oracle']} | {r['arch']} | {r['case']} | {theirs['dram_bits'] / 8192:,.1f} | "
              f"{r['dram_ratio']:.3f} | {theirs['energy_pj'] / 1e6:,.2f} | {r['energy_ratio']:.3f} |")
    for r in rows:
        if "frugal" in r:
            f = r["frugal"]
            print(f"{r['oracle']} {r['arch']} {r['case']}: DRAM {r['dram_ratio']:.3f}x the oracle's at energy "
                  f"{r['energy_ratio']:.3f}x; e2sim's fewest-DRAM mapping: DRAM {f['dram_ratio']:.3f}x, energy "
                  f"{f['energy_ratio']:.3f}x the oracle's ({f['energy_over_chosen'] - 1:+.1%} over e2sim's choice)")
    for oracle in compare.ORACLES:
        mine = [r for r in rows if r["oracle"] == oracle]
        if mine:
            print(f"{oracle}: {len(mine)} cases, DRAM ratio max {max(r['dram_ratio'] for r in mine):.3f}, "
                  f"energy ratio min {min(r['energy_ratio'] for r in mine):.3f} max "
                  f"{max(r['energy_ratio'] for r in mine):.3f}")


if __name__ == "__main__":
    main()
