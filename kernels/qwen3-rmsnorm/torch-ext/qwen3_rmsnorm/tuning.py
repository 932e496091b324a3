"""The tuning table for Qwen3-8B rows (bfloat16, hidden 4096): which fixed kernel shape runs at
each size class of each op. 0 is the kernel's built-in choice; any other value is one of
TUNING_CONFIGS (grid * 1000 + hints * 100 + weight * 10 + packs per thread). A call with
`rows` rows uses the first size class >= rows (the largest for more). The kernel lab
(`lab init --template kernel`) tunes these numbers; they are read at every call.
"""
NORM_1 = 0
NORM_16 = 0
NORM_128 = 0
NORM_512 = 0
NORM_2048 = 0
NORM_8192 = 0
NORM_32768 = 0
FUSED_1 = 0
FUSED_16 = 0
FUSED_128 = 0
FUSED_512 = 0
FUSED_2048 = 0
FUSED_8192 = 0
FUSED_32768 = 0
