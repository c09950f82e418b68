# mma.sync m16n8k16 with bf16 operands, cp.async and ldmatrix start at sm_80.
set(GPTQ_FAMILY_MIN_ARCH 80)
