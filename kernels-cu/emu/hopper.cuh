// emu/hopper.cuh: host stand-in for kernels-cu/cuda/hopper.cuh — the sm_90a primitives as the PTX ISA defines
// them, executed by the fibers of emu/common.cuh.
//   * Shared memory is the harness's dynamic buffer `smem` (1024-byte aligned); a shared address is the offset
//     into it.
//   * mbarrier: expected arrivals, pending arrivals, transaction count and phase per barrier; a phase completes
//     when both counts reach zero; try_wait.parity(P) passes once the current phase's parity is not P. A wait
//     that can never pass (every fiber blocked) is reported and the check exits 1 instead of hanging.
//   * TMA: the box is copied when the copy is issued (element by element, zero outside the tensor, the
//     128-byte swizzle applied to the destination offset) and its bytes complete the barrier's transaction
//     count. So a consumer that reads a stage before its barrier passes reads either old or new data; the
//     fiber schedule (a fiber runs until it blocks) lets the producer run as far ahead as its empty barriers
//     allow, which is where a missing wait shows up.
//   * wgmma: the warpgroup's 128 threads meet; each call is recorded with its descriptors, its A registers
//     and every thread's accumulator address; commit closes a group; wait_group<K> executes the oldest groups
//     until K remain, reading shared memory then and writing each thread's accumulator fragment. Reading an
//     accumulator before the wait sees the old value, as on the GPU, so a missing wait fails the check.
//     Operands are located by decoding the descriptor bits (hopper_desc.cuh) with the canonical 128-byte
//     swizzle layouts — the decoding the tensor cores do; only layout type 1 (128-byte swizzle) and base
//     offset 0 are modelled, anything else is reported.
//   * bulk reductions (cp.reduce.async.bulk .add.f32): each thread's copies are grouped by commit; the shared
//     source is captured at issue and compared at the wait (a source written after the issue or before the
//     wait fails), the addition performed at the wait, inside the destination range the harness sets
//     (emu::bulk_lo .. bulk_hi); a CTA must end with every copy waited for. Not modelled: the flush of
//     subnormal sums to zero, a missing fence.proxy.async, and the gap between a read wait and completion.
//   * named barriers (bar.sync / bar.arrive): a count per id; a CTA must leave none half-arrived (checked by
//     the harness through emu_named_barriers_idle), as the kernels here are written to.
//   * setmaxnreg, wgmma.fence, fence.proxy.async and the register fences have nothing to model.
// What this cannot show: the fibers run round-robin (emu/common.cuh, default or reversed order), so one
// warpgroup never runs far ahead of another; a missing barrier between warpgroups that only such a lead
// would expose (for example, reading a shared tile another warpgroup writes a few instructions earlier in
// the same step) passes here. Those orderings are checked by reading, and by compute-sanitizer's racecheck on
// a GPU (scripts/device-check.sh sanitize).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <map>
#include <vector>

#include "common.cuh"
#include "mma.cuh"
#include "hopper_desc.cuh"

extern unsigned char smem[];  // the harness's dynamic shared memory, 1024-byte aligned

inline unsigned smem_u32(const void* p) { return (unsigned)(static_cast<const unsigned char*>(p) - smem); }

namespace emu {

[[noreturn]] inline void hopper_fail(const char* what) {
    // _Exit: the fiber runs on a stack that exit()'s destructors would free under it
    std::printf("FAIL emulated sm_90a: %s\n", what);
    std::fflush(stdout);
    std::_Exit(1);
}

// ---- mbarrier ----
struct MBar {
    unsigned expected = 0, pending = 0, phase = 0;
    long long tx = 0;
};
inline std::map<const void*, MBar> mbars;

inline MBar& mbar_of(const void* bar) {
    auto it = mbars.find(bar);
    if (it == mbars.end()) hopper_fail("mbarrier used before mbarrier.init");
    return it->second;
}
inline void mbar_try_complete(MBar& b) {
    if (b.pending == 0 && b.tx == 0) {
        ++b.phase;
        b.pending = b.expected;
    }
}
inline void mbar_complete_tx(void* bar, long long bytes) {
    MBar& b = mbar_of(bar);
    b.tx -= bytes;
    if (b.tx < 0) hopper_fail("a TMA copy completed more bytes than the barrier expected");
    mbar_try_complete(b);
}

// ---- named barriers: arrivals counted per id; a phase completes at the expected count ----
inline int nb_count[16], nb_gen[16];
inline void named_barrier(int id, int threads, bool wait) {
    if (id <= 0 || id >= 16) hopper_fail("named barrier id outside 1..15");
    const int gen = nb_gen[id];
    if (++nb_count[id] == threads) {
        nb_count[id] = 0;
        ++nb_gen[id];
    } else if (wait) {
        for (long spins = 0; nb_gen[id] == gen; ++spins) {
            if (spins > (1l << 18)) hopper_fail("named barrier never completes (deadlock)");
            yield();
        }
    }
}

// ---- warpgroup meeting points (one per warpgroup of the CTA) ----
inline int wg_count[kMaxThreads / 128], wg_gen[kMaxThreads / 128];
inline void warpgroup_barrier() {
    const int w = (int)threadIdx.x / 128;
    const int gen = wg_gen[w];
    if (++wg_count[w] == 128) {
        wg_count[w] = 0;
        ++wg_gen[w];
    } else {
        while (wg_gen[w] == gen) yield();
    }
}

// ---- TMA ----
struct TmaMap {
    const unsigned char* base;
    unsigned long long dims[3], strides[2];  // dims in elements (dim0 contiguous); strides in bytes of dims 1, 2
    unsigned box[3], elem;
    bool swizzle128;
};
static_assert(sizeof(TmaMap) <= sizeof(TmaDesc), "the model's map fits the descriptor's 128 bytes");

inline unsigned swizzle128(unsigned o) { return o ^ (((o >> 7) & 7u) << 4); }

// ---- bulk reductions: each thread's copies, grouped by commit; the shared source is captured at issue and
// must be unchanged when the group is waited for (a source written after the issue, or reused before the
// wait, fails); the addition to global memory is performed at the wait ----
struct BulkOp {
    float* dst;
    unsigned src, bytes;
    std::vector<float> data;
};
struct BulkState {
    std::vector<BulkOp> open;
    std::vector<std::vector<BulkOp>> committed;
};
inline BulkState bulk_state[kMaxThreads];
// The global range bulk reductions may write (the harness sets it to the destination buffer); a copy
// outside it fails, as it would write another tensor on the GPU.
inline const float* bulk_lo = nullptr;
inline const float* bulk_hi = nullptr;
inline void bulk_complete(const BulkOp& op) {
    if (op.dst < bulk_lo || op.dst + op.data.size() > bulk_hi)
        hopper_fail("a bulk reduction writes outside its destination buffer");
    if (std::memcmp(op.data.data(), smem + op.src, op.bytes) != 0)
        hopper_fail("a bulk copy's shared source changed between its issue and its wait (missing barrier or wait)");
    for (size_t i = 0; i < op.data.size(); ++i) op.dst[i] += op.data[i];
}

// ---- wgmma ----
struct WgmmaOp {
    int n;
    unsigned long long da, db;  // da unused when A comes from registers
    bool a_regs, tnsp_a, tnsp_b, accumulate;
    float* acc[128];            // each thread's accumulator array ([n/8][4])
    uint32_t a[128][4];
};
struct WgState {
    std::vector<WgmmaOp> open;
    std::vector<std::vector<WgmmaOp>> committed;
};
inline WgState wg_state[kMaxThreads / 128];
inline float* wg_acc[kMaxThreads];
inline uint32_t wg_a[kMaxThreads][4];

struct Desc {
    unsigned start, lbo, sbo;
};
inline Desc decode(unsigned long long d) {
    if ((d >> 62) != kDescSwizzle128) hopper_fail("wgmma descriptor layout other than the 128-byte swizzle");
    if (((d >> 49) & 7u) != 0) hopper_fail("wgmma descriptor base offset other than 0");
    return Desc{(unsigned)(d & 0x3fffu) << 4, (unsigned)((d >> 16) & 0x3fffu) << 4, (unsigned)((d >> 32) & 0x3fffu) << 4};
}
inline float smem_bf16(unsigned logical) {
    const unsigned o = swizzle128(logical);
    __nv_bfloat16 b;
    std::memcpy(&b, smem + o, 2);
    return bf16_to_f32(b);
}
// Element (mn, k) of a K-major operand: ((8, m), (T, 2)) : ((8T, SBO), (1, T)) in 16-byte units.
inline float k_major(const Desc& d, int mn, int k) {
    return smem_bf16(d.start + (mn / 8) * d.sbo + (mn % 8) * 128 + k * 2);
}
// Element (k, mn) of an MN-major operand: ((T, 8, m), (8, k)) : ((1, T, LBO), (8T, SBO)).
inline float mn_major(const Desc& d, int k, int mn) {
    return smem_bf16(d.start + (mn / 64) * d.lbo + (mn % 64) * 2 + (k / 8) * d.sbo + (k % 8) * 128);
}

inline void execute(const WgmmaOp& op) {
    const Desc a = op.a_regs ? Desc{} : decode(op.da), b = decode(op.db);
    for (int r = 0; r < 64; ++r)
        for (int n = 0; n < op.n; ++n) {
            float sum = 0.0f;
            for (int k = 0; k < 16; ++k) {
                float av;
                if (op.a_regs) {  // the mma.sync A fragment of warp r / 16
                    const int lane = (r % 8) * 4 + (k % 8) / 2, reg = (r % 16) / 8 + 2 * (k / 8);
                    av = half_of(op.a[(r / 16) * 32 + lane][reg], k % 2);
                } else {
                    av = op.tnsp_a ? mn_major(a, k, r) : k_major(a, r, k);
                }
                const float bv = op.tnsp_b ? mn_major(b, k, n) : k_major(b, n, k);
                sum += av * bv;
            }
            const int owner = (r / 16) * 32 + (r % 8) * 4 + (n % 8) / 2;
            float& d = op.acc[owner][(n / 8) * 4 + ((r % 16) / 8) * 2 + n % 2];
            d = op.accumulate ? d + sum : sum;
        }
}

inline void record(int n, unsigned long long da, unsigned long long db, bool a_regs, bool tnsp_a, bool tnsp_b,
                   bool accumulate, float* acc, const uint32_t* a) {
    const int me = (int)threadIdx.x;
    wg_acc[me] = acc;
    for (int i = 0; i < 4; ++i) wg_a[me][i] = a ? a[i] : 0u;
    warpgroup_barrier();
    if (me % 128 == 0) {
        WgmmaOp op{n, da, db, a_regs, tnsp_a, tnsp_b, accumulate, {}, {}};
        for (int t = 0; t < 128; ++t) {
            op.acc[t] = wg_acc[me + t];
            for (int i = 0; i < 4; ++i) op.a[t][i] = wg_a[me + t][i];
        }
        wg_state[me / 128].open.push_back(op);
    }
    warpgroup_barrier();
}

}  // namespace emu

// ---- the hopper.cuh interface ----
inline unsigned reread_tid() { return threadIdx.x; }
inline void mbar_init(unsigned long long* bar, unsigned arrivals) {
    emu::mbars[bar] = emu::MBar{arrivals, arrivals, 0, 0};
}
inline void mbar_fence_init() {}
inline void fence_view_async_shared() {}
inline void mbar_arrive(unsigned long long* bar) {
    emu::MBar& b = emu::mbar_of(bar);
    if (b.pending == 0) emu::hopper_fail("more arrivals on an mbarrier than it expects");
    --b.pending;
    emu::mbar_try_complete(b);
}
inline void mbar_arrive_expect_tx(unsigned long long* bar, unsigned bytes) {
    emu::mbar_of(bar).tx += bytes;
    mbar_arrive(bar);
}
inline void mbar_wait(unsigned long long* bar, unsigned parity) {
    for (long spins = 0; (emu::mbar_of(bar).phase & 1u) == parity; ++spins) {
        if (spins > (1l << 18)) emu::hopper_fail("mbarrier wait never completes (deadlock)");
        emu::yield();
    }
}

// True when no named barrier holds arrivals (call between CTAs).
inline bool emu_named_barriers_idle() {
    for (int c : emu::nb_count)
        if (c != 0) return false;
    return true;
}

// The host side: what cuTensorMapEncodeTiled does for the kernels here (3-D, bf16 or f32 elements).
inline TmaDesc emu_encode_tma(const void* base, const unsigned long long (&dims)[3],
                              const unsigned long long (&strides)[2], const unsigned (&box)[3], unsigned elem,
                              bool swizzle128) {
    if (swizzle128 && box[0] * elem > 128) emu::hopper_fail("a 128-byte swizzle box row wider than 128 bytes");
    emu::TmaMap m{static_cast<const unsigned char*>(base), {dims[0], dims[1], dims[2]}, {strides[0], strides[1]},
                  {box[0], box[1], box[2]}, elem, swizzle128};
    TmaDesc d{};
    std::memcpy(&d, &m, sizeof m);
    return d;
}

inline void tma_load_3d(void* dst, const TmaDesc& map, int c0, int c1, int c2, unsigned long long* bar) {
    emu::TmaMap m;
    std::memcpy(&m, &map, sizeof m);
    unsigned char* out = static_cast<unsigned char*>(dst);
    if (m.swizzle128 && smem_u32(dst) % 1024 != 0) emu::hopper_fail("a swizzled TMA destination not 1024-byte aligned");
    for (unsigned i2 = 0; i2 < m.box[2]; ++i2)
        for (unsigned i1 = 0; i1 < m.box[1]; ++i1)
            for (unsigned i0 = 0; i0 < m.box[0]; ++i0) {
                const long long x = (long long)c0 + i0, y = (long long)c1 + i1, z = (long long)c2 + i2;
                const unsigned o = ((i2 * m.box[1] + i1) * m.box[0] + i0) * m.elem;
                unsigned char* to = out + (m.swizzle128 ? emu::swizzle128(o) : o);
                const bool inside = x >= 0 && y >= 0 && z >= 0 && (unsigned long long)x < m.dims[0] &&
                                    (unsigned long long)y < m.dims[1] && (unsigned long long)z < m.dims[2];
                if (inside)
                    std::memcpy(to, m.base + x * m.elem + y * m.strides[0] + z * m.strides[1], m.elem);
                else
                    std::memset(to, 0, m.elem);
            }
    emu::mbar_complete_tx(bar, (long long)m.box[0] * m.box[1] * m.box[2] * m.elem);
}

inline void bulk_reduce_add_f32(float* gdst, const float* ssrc, unsigned bytes) {
    const unsigned src = smem_u32(ssrc);
    if (bytes % 16 != 0 || src % 16 != 0 || reinterpret_cast<uintptr_t>(gdst) % 16 != 0)
        emu::hopper_fail("a bulk copy's size or addresses not 16-byte aligned");
    std::vector<float> data(bytes / 4);
    std::memcpy(data.data(), smem + src, bytes);
    emu::bulk_state[threadIdx.x].open.push_back(emu::BulkOp{gdst, src, bytes, std::move(data)});
}
inline void bulk_commit() {
    emu::BulkState& b = emu::bulk_state[threadIdx.x];
    b.committed.push_back(std::move(b.open));
    b.open.clear();
}
template <int K> inline void bulk_wait() {
    emu::BulkState& b = emu::bulk_state[threadIdx.x];
    while (b.committed.size() > (size_t)K) {
        for (const emu::BulkOp& op : b.committed.front()) emu::bulk_complete(op);
        b.committed.erase(b.committed.begin());
    }
}
// The model reads the source at the wait, so waiting for the read and for completion are the same.
template <int K> inline void bulk_wait_read() { bulk_wait<K>(); }
// True when no thread holds bulk copies it has not waited for (call at a CTA's end).
inline bool emu_bulk_idle() {
    for (const emu::BulkState& b : emu::bulk_state)
        if (!b.open.empty() || !b.committed.empty()) return false;
    return true;
}

template <int Id> inline void named_barrier_sync(int threads) { emu::named_barrier(Id, threads, true); }
template <int Id> inline void named_barrier_arrive(int threads) { emu::named_barrier(Id, threads, false); }
template <int N> inline void fence_regs(float (&)[N][4]) {}
template <int N> inline void fence_regs(unsigned (&)[N][4]) {}

inline void wgmma_fence() {}
inline void wgmma_commit() {
    emu::warpgroup_barrier();
    if (threadIdx.x % 128 == 0) {
        emu::WgState& w = emu::wg_state[threadIdx.x / 128];
        w.committed.push_back(std::move(w.open));
        w.open.clear();
    }
    emu::warpgroup_barrier();
}
template <int K> inline void wgmma_wait() {
    emu::warpgroup_barrier();
    if (threadIdx.x % 128 == 0) {
        emu::WgState& w = emu::wg_state[threadIdx.x / 128];
        while (w.committed.size() > (size_t)K) {
            for (const emu::WgmmaOp& op : w.committed.front()) emu::execute(op);
            w.committed.erase(w.committed.begin());
        }
    }
    emu::warpgroup_barrier();
}
template <int R> inline void warpgroup_reg_dealloc() {}
template <int R> inline void warpgroup_reg_alloc() {}

inline void wgmma_ss_m64n128(float (&d)[16][4], unsigned long long da, unsigned long long db, int scale_d) {
    emu::record(128, da, db, false, false, false, scale_d != 0, &d[0][0], nullptr);
}
inline void wgmma_ss_m64n64(float (&d)[8][4], unsigned long long da, unsigned long long db, int scale_d) {
    emu::record(64, da, db, false, false, false, scale_d != 0, &d[0][0], nullptr);
}
inline void wgmma_ss_m64n64_tnspab(float (&d)[8][4], unsigned long long da, unsigned long long db, int scale_d) {
    emu::record(64, da, db, false, true, true, scale_d != 0, &d[0][0], nullptr);
}
inline void wgmma_rs_m64n128_tnspb(float (&d)[16][4], const unsigned (&a)[4], unsigned long long db) {
    emu::record(128, 0, db, true, false, true, true, &d[0][0], a);
}
inline void wgmma_rs_m64n64_tnspb(float (&d)[8][4], const unsigned (&a)[4], unsigned long long db) {
    emu::record(64, 0, db, true, false, true, true, &d[0][0], a);
}
