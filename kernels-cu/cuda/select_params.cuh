// select_params.cuh: the by-value parameter structs of the radix select (select.cu, select_wide.cu) and of the
// radix sort's scatter, identical in layout to their Rust #[repr(C)] twins in engine/src/cuda/select_params.rs.
// One struct serves every kernel of one call (each reads the fields it needs; the pass number is a separate
// argument), so the host fills it once, by field name. The static_asserts pin the layout; the Rust test
// `layouts_match_select_params_cuh` reads them and compares the twins field by field, and the engine compares
// each struct's size with the kernel's PTX parameter before every launch. The kernels take them as
// `const __grid_constant__` (read in place from parameter space: with a by-value copy ptxas gave
// select_hist_plain 34 registers instead of 28), except select_mask (27 registers with the copy, 34 without).
// Plain C++, so the CPU emulation includes it unchanged.
#pragma once

#include <cstddef>

// The 8-bit radix select of select.cu: select_hist_plain and select_scan (per pass), select_mask.
struct SelectParams {
    unsigned* hist;          // [slots][256], zeroed before pass 0 (select_scan re-zeroes); slot = pool·ntails + tail
    unsigned* state;         // [slots][4]: remaining rank, key prefix, index prefix, mode (zeroed)
    unsigned* flags;         // [2]: some slot needs the index passes, NaN score on a valid token (zeroed)
    float* out0;             // [n] bottom-tail mask
    float* out1;             // [n] top-tail mask, null when ntails = 1
    const float* scores;     // [n], or null: the seeded hash keys (random selection)
    const float* valid;      // [n], nonzero = valid
    const int* cu;           // [num_pools + 1] the pools' offsets
    long long n;             // tokens
    unsigned long long seed; // random selection's hash seed
    double frac, slack;      // k = ceil(frac·n_valid·slack) per slot (tail_count)
    int num_pools, ntails;   // ntails 1 (bottom) or 2 (bottom, top)
};
static_assert(offsetof(SelectParams, hist) == 0, "SelectParams layout");
static_assert(offsetof(SelectParams, state) == 8, "SelectParams layout");
static_assert(offsetof(SelectParams, flags) == 16, "SelectParams layout");
static_assert(offsetof(SelectParams, out0) == 24, "SelectParams layout");
static_assert(offsetof(SelectParams, out1) == 32, "SelectParams layout");
static_assert(offsetof(SelectParams, scores) == 40, "SelectParams layout");
static_assert(offsetof(SelectParams, valid) == 48, "SelectParams layout");
static_assert(offsetof(SelectParams, cu) == 56, "SelectParams layout");
static_assert(offsetof(SelectParams, n) == 64, "SelectParams layout");
static_assert(offsetof(SelectParams, seed) == 72, "SelectParams layout");
static_assert(offsetof(SelectParams, frac) == 80, "SelectParams layout");
static_assert(offsetof(SelectParams, slack) == 88, "SelectParams layout");
static_assert(offsetof(SelectParams, num_pools) == 96, "SelectParams layout");
static_assert(offsetof(SelectParams, ntails) == 100, "SelectParams layout");
static_assert(sizeof(SelectParams) == 104, "SelectParams layout");

// The wide radix select of select_wide.cu: select_wide_data, select_wide_cand and select_wide_scan (per pass),
// select_wide_cand_mask.
struct SelectWideParams {
    unsigned* ws;            // [flags 4 | counts slots | state slots·4 | hist slots·2048], zeroed once
    const int* tiles;        // [tiles][3]: (start, end, pool), tiles never crossing a pool (Packing::tiles_on)
    float* out0;             // [n] bottom-tail mask
    float* out1;             // [n] top-tail mask, null when ntails = 1
    const float* scores;     // [n], or null: the seeded hash keys (random selection)
    const float* valid;      // [n], nonzero = valid
    const int* cu;           // [num_pools + 1] the pools' offsets
    uint2* cand;             // [ntails][n] (tail-oriented key, index) candidates, in the pools' layout
    long long n;             // tokens
    unsigned long long seed; // random selection's hash seed
    double frac, slack;      // k = ceil(frac·n_valid·slack) per slot (tail_count)
    int num_pools, ntails;   // ntails 1 (bottom) or 2 (bottom, top)
    int split;               // blocks per tile in the candidate kernels
    int vec;                 // 1: scores, valid, out0 and out1 are 16-byte aligned (float4 access)
    int fuse;                // 1: the block that finishes a pass last runs its scan (no select_wide_scan)
    int copies;              // 1: pass 0 counts into two shared copies of its histogram by lane parity
};
static_assert(offsetof(SelectWideParams, ws) == 0, "SelectWideParams layout");
static_assert(offsetof(SelectWideParams, tiles) == 8, "SelectWideParams layout");
static_assert(offsetof(SelectWideParams, out0) == 16, "SelectWideParams layout");
static_assert(offsetof(SelectWideParams, out1) == 24, "SelectWideParams layout");
static_assert(offsetof(SelectWideParams, scores) == 32, "SelectWideParams layout");
static_assert(offsetof(SelectWideParams, valid) == 40, "SelectWideParams layout");
static_assert(offsetof(SelectWideParams, cu) == 48, "SelectWideParams layout");
static_assert(offsetof(SelectWideParams, cand) == 56, "SelectWideParams layout");
static_assert(offsetof(SelectWideParams, n) == 64, "SelectWideParams layout");
static_assert(offsetof(SelectWideParams, seed) == 72, "SelectWideParams layout");
static_assert(offsetof(SelectWideParams, frac) == 80, "SelectWideParams layout");
static_assert(offsetof(SelectWideParams, slack) == 88, "SelectWideParams layout");
static_assert(offsetof(SelectWideParams, num_pools) == 96, "SelectWideParams layout");
static_assert(offsetof(SelectWideParams, ntails) == 100, "SelectWideParams layout");
static_assert(offsetof(SelectWideParams, split) == 104, "SelectWideParams layout");
static_assert(offsetof(SelectWideParams, vec) == 108, "SelectWideParams layout");
static_assert(offsetof(SelectWideParams, fuse) == 112, "SelectWideParams layout");
static_assert(offsetof(SelectWideParams, copies) == 116, "SelectWideParams layout");
static_assert(sizeof(SelectWideParams) == 120, "SelectWideParams layout");

// One pass of the radix sort's scatter (radix_sort_scatter, radix_sort_scatter_local).
struct SortScatterParams {
    unsigned* keys_out;      // [n]
    int* idx_out;            // [n]
    const unsigned* keys_in; // [n]
    const int* idx_in;       // [n]
    const unsigned* counts;  // [256][tiles] exclusive per-digit offsets over tiles (radix_sort_scan)
    const unsigned* totals;  // [256] keys per digit
    long long n, tiles;      // keys; tiles of kTile keys
    int shift;               // the digit: (key >> shift) & 255
    int pad;
};
static_assert(offsetof(SortScatterParams, keys_out) == 0, "SortScatterParams layout");
static_assert(offsetof(SortScatterParams, idx_out) == 8, "SortScatterParams layout");
static_assert(offsetof(SortScatterParams, keys_in) == 16, "SortScatterParams layout");
static_assert(offsetof(SortScatterParams, idx_in) == 24, "SortScatterParams layout");
static_assert(offsetof(SortScatterParams, counts) == 32, "SortScatterParams layout");
static_assert(offsetof(SortScatterParams, totals) == 40, "SortScatterParams layout");
static_assert(offsetof(SortScatterParams, n) == 48, "SortScatterParams layout");
static_assert(offsetof(SortScatterParams, tiles) == 56, "SortScatterParams layout");
static_assert(offsetof(SortScatterParams, shift) == 64, "SortScatterParams layout");
static_assert(offsetof(SortScatterParams, pad) == 68, "SortScatterParams layout");
static_assert(sizeof(SortScatterParams) == 72, "SortScatterParams layout");
