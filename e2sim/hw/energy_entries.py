"""Names of the energy-table entries (every technology table defines exactly these); a hardware
spec may override any of them in ``energy_overrides``."""

ENERGY_ENTRIES = (
    "int_mult_8b_pj",
    "int_mult_width_exponent",
    "int_add_32b_pj",
    "fp16_mult_pj",
    "fp32_mult_pj",
    "fp16_add_pj",
    "fp32_add_pj",
    "rf_access_16b_pj",
    "noc_16b_pj",
    "pe_hop_16b_pj",
    "clock_pj_per_pe_cycle",
    "sram_access_64b_8kb_pj",
    "sram_size_exponent",
    "dram_lpddr_pj_per_bit",
    "dram_lpddr4_pj_per_bit",
    "dram_ddr3_pj_per_bit",
    "dram_ddr4_pj_per_bit",
    "dram_gddr5_pj_per_bit",
    "dram_hbm2_pj_per_bit",
    "nominal_supply_v",
    "drum_steering_ratio",
    "mitchell_mult_ratio",
)
