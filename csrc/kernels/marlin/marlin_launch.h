// Launchers of the Marlin-style mixed-input GEMM (raw pointers and a stream; the torch adapter
// marlin_torch.cpp validates shapes first).
//
// Problem: out[M, N] = x[M, K] @ W^T with W [N, K] a 4- or 8-bit GPTQ layer that marlin_repack has
// rewritten into the tile layout below. K_pad = K rounded up to kMarlinTileK, N_pad = N rounded up to
// kMarlinTileN; padded codes are 0 and the padded part of x is read as zeros, so padding adds nothing.
//
// Repacked weight layout (int32 words): for every 64-column tile nt and 16-row slice kt of the
// weight (k x n = 16 x 64 codes), 32 lanes x (bits) words, stored [nt][kt][h][lane][w4] with
// h in [0, bits/4) and w4 in [0, 4): lane `lane` of a warp loads its bits/4 x 16 bytes of every slice
// with one coalesced 16-byte load each, and they are exactly the B fragments of the eight
// m16n8k16 mma tiles (n8 sub-tiles j = 0..7) that the slice feeds. Lane (g = lane/4, t = lane%4)
// owns column n = 8j + g and rows k = 2t, 2t+1, 2t+8, 2t+9 of sub-tile j.
//   4 bits: word w4 holds sub-tiles 2w4 (nibbles 0,4,2,6 = rows 2t,2t+1,2t+8,2t+9) and 2w4+1
//           (nibbles 1,5,3,7), so that (w & 0x000f000f) | 0x64006400 is the fp16 pair (1024 + q) of
//           rows (2t, 2t+1) - the first B register - without any shifting between the two.
//   8 bits: word 4h + w4 is sub-tile j = 4h + w4, bytes 0,2 = rows 2t,2t+1 and bytes 1,3 = rows
//           2t+8,2t+9.
// Scales and zeros [G_pad, N_pad] (T): columns permuted inside every 64-column tile so that position
// g*8 + j holds column 8j + g: one 16-byte load gives a lane the values of its eight columns.
// zeros hold the true zero point z as a T value (exact: z < 256); nullptr means symmetric,
// z = 2^(bits-1).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace gptq::cuda {

constexpr int kMarlinTileN = 64;   // output columns per CTA tile
constexpr int kMarlinTileK = 128;  // rows of K per pipeline stage (K is padded to a multiple of it)

struct MarlinGemmArgs {
  const void* x;          // [M, K] row-major, T; K % 8 == 0 (16-byte rows chunks)
  const void* qweight;    // repacked, K_pad * N_pad * bits / 32 words, 16-byte aligned
  const void* scales;     // [G_pad, N_pad] T, permuted
  const void* zeros;      // [G_pad, N_pad] T, permuted, or nullptr (symmetric)
  void* out;              // [M, N] T
  float* partial;         // [splits, M, N_pad] fp32 when splits > 1 (need not be initialised)
  int* counters;          // [m_chunks * ctas_n] int32, all zero on entry; left zero
  int64_t M, K, N, K_pad, N_pad;
  int64_t group_size;     // rows per group after padding: 32 or 64, or a multiple of 128 (K_pad: one group)
  int bits;               // 4 or 8
  int splits;             // CTAs sharing one output tile along K (see marlin_plan)
};

// Launch plan: which m-tile, how many K splits; the adapter sizes the workspaces from it.
struct MarlinPlan {
  int m_blocks;   // 16-row mma blocks per CTA: 1, 2 or 4
  int m_chunks;   // ceil(M / (16 m_blocks))
  int ctas_n;     // CTAs along N: ceil(N_pad / 256), four 64-column tiles (one per warp) each
  int splits;     // K splits
};

// Chooses the plan for an M x K_pad x N_pad problem on the current device (fills the machine with
// resident CTAs: one wave, split along K only when the output tiles are too few).
MarlinPlan marlin_plan(int64_t M, int64_t K_pad, int64_t N_pad, int bits, bool bf16);

template <typename T>
cudaError_t launch_marlin_gemm(const MarlinGemmArgs& args, const MarlinPlan& plan, cudaStream_t stream);

// Dense W [N, K] (T, nn.Linear's layout) from the repacked layout (rows >= K and columns >= N
// dropped): the large-M path hands it to cuBLAS.
template <typename T>
cudaError_t launch_marlin_unpack(const void* qweight, const void* scales, const void* zeros, void* out, int64_t K,
                                 int64_t N, int64_t K_pad, int64_t N_pad, int64_t group_size, int bits,
                                 cudaStream_t stream);

}  // namespace gptq::cuda
