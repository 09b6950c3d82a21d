// ChatCore's CPU decode kernels: weight-only 4-bit and 8-bit linears on AVX-512 VNNI, and the whole
// one-token step of a Llama decoder in C++ (one call per token instead of hundreds of torch ops).
//
// Why: a token reads every weight once, so decoding is bound by bytes read and by per-op overhead.
// torch's packed int4 kernel reads ~4.5 GB/s per thread here and eager glue costs ~8 ms a token.
// These kernels quantize the activations to int8 per group of 32 (as llama.cpp does) so that the
// inner product is one `vpdpbusd` per 32 weights, and the step runs with no Python in it.
//
// Formats (built by chatcore/fast/native.py, laid out as described above QLinear):
//   q4: codes q in 0..15 per group of 32 along K, with a bf16 scale and minimum: w = q * scale + min.
//   q8: codes u = w8 + 128 with w8 in -127..127 and a float scale per output row: w = w8 * scale.
// Activations: float32 everywhere. The KV cache is [slots, kv_heads, length, head_dim], either bfloat16
// or int8 with a float scale per position and head ([slots, kv_heads, length]): keys as uint8 k + 128
// (`vpdpbusd` multiplies unsigned bytes by signed ones), values as int8.

#include <torch/extension.h>
#include <ATen/Parallel.h>  // at::get_num_threads
#include <immintrin.h>
#if !(defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512DQ__) && \
      defined(__AVX512VNNI__) && defined(__AVX512BF16__))
// The same kernels on AVX2 and FMA, each 512-bit operation as two 256-bit ones (also on AVX-512 CPUs
// that lack VNNI or BF16, which the kernels use).
#include "avx512_on_avx2.h"
#endif
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <tuple>
#include <type_traits>
#include <vector>

namespace {

// A pool of spinning workers for the many short parallel loops of one step (~150 a token).
// Why not at::parallel_for: OpenMP teams started from a thread other than the main one (the
// scheduler's) park between regions, and waking them costs ~50 us a region: 15 ms a token instead
// of 4. These workers spin while work keeps coming and sleep after a short idle spell.
//
// The caller never waits for a worker that has not started: a job's chunks go to whoever takes them
// first, the caller included, and once they are all taken the caller waits only for the workers
// that joined. A worker the OS has put aside (a browser or another process busy on the same cores)
// then costs the step its share of the work, not a time slice of the OS's for every loop.
class SpinPool {
 public:
  explicit SpinPool(int threads) {
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { work_loop(); });
  }
  ~SpinPool() {
    stop_.store(true);
    { std::lock_guard<std::mutex> hold(sleep_lock_); }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
  }

  // fn(begin, end) over [0, n) in chunks of `grain`, on the caller and whichever workers join.
  template <class F>
  void run(int64_t n, int64_t grain, const F& fn) {
    if (workers_.empty() || n <= grain) {
      if (n > 0) fn(0, n);
      return;
    }
    std::lock_guard<std::mutex> one_job(run_lock_);  // two decoders never share the workers at once
    job_ = [&fn](int64_t a, int64_t b) { fn(a, b); };
    n_ = n, grain_ = grain;
    next_.store(0, std::memory_order_relaxed);
    open_.store(true);  // publishes the job's fields to a worker that reads it open
    epoch_.fetch_add(1);
    if (sleeping_.load() > 0) {
      { std::lock_guard<std::mutex> hold(sleep_lock_); }
      wake_.notify_all();
    }
    take_chunks();
    open_.store(false);  // a worker that joins from now on takes nothing
    while (joined_.load() > 0) _mm_pause();  // those already in may still hold a chunk
  }

 private:
  // Guided: each chunk is a share of what is left (never under the grain), so the work starts in
  // big chunks and ends in small ones, and whoever finishes first waits at most a small chunk.
  void take_chunks() {
    const int64_t team = int64_t(workers_.size()) + 1;
    int64_t a = next_.load(std::memory_order_relaxed);
    while (a < n_) {
      const int64_t size = std::max(grain_, (n_ - a) / (2 * team));
      if (next_.compare_exchange_weak(a, a + size, std::memory_order_relaxed)) {
        job_(a, std::min(n_, a + size));
        a = next_.load(std::memory_order_relaxed);
      }
    }
  }

  void work_loop() {
    uint64_t seen = 0;
    while (true) {
      auto idle_since = std::chrono::steady_clock::now();
      for (int spins = 0; epoch_.load() == seen && !stop_.load(); ++spins) {
        _mm_pause();
        if ((spins & 255) != 255) continue;
        const auto idle = std::chrono::steady_clock::now() - idle_since;
        if (idle > std::chrono::milliseconds(2)) {
          std::unique_lock<std::mutex> hold(sleep_lock_);
          sleeping_.fetch_add(1);
          wake_.wait(hold, [&] { return epoch_.load() != seen || stop_.load(); });
          sleeping_.fetch_sub(1);
        } else if (idle > std::chrono::microseconds(50)) {
          std::this_thread::yield();  // between steps: let whatever else wants this core run
        }
      }
      if (stop_.load()) return;
      seen = epoch_.load();
      // Join, then look: the caller closes the job before it waits for joined_ to drain, so a worker
      // that finds the job open is counted, and the job's fields stay valid until it leaves.
      joined_.fetch_add(1);
      if (open_.load()) take_chunks();
      joined_.fetch_sub(1);
    }
  }

  std::vector<std::thread> workers_;
  std::function<void(int64_t, int64_t)> job_;
  int64_t n_ = 0, grain_ = 1;
  std::atomic<int64_t> next_{0};
  std::atomic<bool> open_{false};
  std::atomic<int> joined_{0}, sleeping_{0};
  std::atomic<uint64_t> epoch_{0};
  std::atomic<bool> stop_{false};
  std::mutex run_lock_, sleep_lock_;
  std::condition_variable wake_;
};

SpinPool& pool() {
  // Never destroyed: at exit the scheduler's thread (a daemon) may still be inside a step when the
  // library's statics are torn down. One benchmark run on an AVX2 machine ended in std::terminate at
  // exit; a pool destroyed under that thread is the likely cause (not proven). The OS ends the
  // workers with the process.
  static SpinPool* instance = new SpinPool(std::max(1, at::get_num_threads()));
  return *instance;
}

constexpr int64_t GROUP = 32;  // quantization group along K, for weights and activations alike
// Positions below which a context is not cut into parts. Every row is cut alike, alone or beside others
// (see attention), and cutting costs a step of 8 rows 1-3% (bench.bench_ab from positions 400 and 1,000);
// 384 cuts only from 768 positions, where one row gains from it (a row of 1,000 took 4.3% longer uncut).
constexpr int64_t ATTENTION_PART_MIN = 384;
constexpr int TILE = 8;        // rows of activations that share one read of the weights

inline float bf16_to_float(uint16_t v) {
  uint32_t bits = uint32_t(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline uint16_t float_to_bf16(float f) {  // round to nearest even, as torch's .to(bfloat16)
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7fffffff) > 0x7f800000) return 0x7fc0;  // NaN stays NaN
  bits += 0x7fff + ((bits >> 16) & 1);
  return uint16_t(bits >> 16);
}

// 16 bfloat16 values widened to float32.
inline __m512 load_bf16x16(const uint16_t* p) {
  __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}

// e^x for 16 lanes: 2^(x log2 e) split into 2^n (scalef) and 2^f for |f| <= 1/2 by its Taylor
// polynomial (relative error ~1e-7, far below what bfloat16 caches and int8 activations keep).
inline __m512 exp16(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-88.f));
  const __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f));
  const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_mul_ps(_mm512_sub_ps(t, n), _mm512_set1_ps(0.6931471805599453f));  // 2^(t-n) = e^f
  // e^f for |f| <= ln2/2: 1 + f + f^2/2 + ... + f^7/7!
  __m512 p = _mm512_set1_ps(1.f / 5040);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f / 720));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f / 120));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f / 24));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f / 6));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(p, n);
}

// out[i] = silu(gate[i]) * up[i]
void silu_mul(const float* gate, const float* up, float* out, int64_t n) {
  int64_t i = 0;
  const __m512 one = _mm512_set1_ps(1.f);
  for (; i + 16 <= n; i += 16) {
    const __m512 g = _mm512_loadu_ps(gate + i);
    const __m512 sig = _mm512_div_ps(one, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), g))));
    _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_mul_ps(g, sig), _mm512_loadu_ps(up + i)));
  }
  for (; i < n; ++i) out[i] = gate[i] / (1.f + std::exp(-gate[i])) * up[i];
}

// Activations quantized per row and group of 32: x ~ q * scale.
struct QuantizedRows {
  int64_t rows = 0, k = 0, groups = 0;
  std::vector<int8_t> q;       // [rows, k]
  std::vector<float> scale;    // [rows, groups]
  std::vector<float> sum;      // [rows, groups]: the sum of each quantized group (for q4's minimum term)
  std::vector<float> offset;   // [rows]: sum_g scale_g * 128 * sum(q_g) (for q8's +128 storage)

  void resize(int64_t rows_, int64_t k_) {
    rows = rows_, k = k_, groups = k_ / GROUP;
    // q has room for whole tiles of 16 rows: AMX loads them all, and the rows past `rows` are ignored.
    q.resize((rows + 15) / 16 * 16 * k), scale.resize(rows * groups), sum.resize(rows * groups), offset.resize(rows);
  }

  // Row r from x[k] (resize first); rows are independent, so several threads may fill them at once.
  void quantize_row(int64_t r, const float* x) {
    float off = 0.f;
    for (int64_t g = 0; g < groups; ++g) {
      const float* src = x + g * GROUP;
      __m512 a = _mm512_loadu_ps(src), b = _mm512_loadu_ps(src + 16);
      float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
      float s = amax / 127.f;
      __m512 inv = _mm512_set1_ps(amax > 0.f ? 127.f / amax : 0.f);
      __m512i qa = _mm512_cvtps_epi32(_mm512_mul_ps(a, inv));  // rounds to nearest
      __m512i qb = _mm512_cvtps_epi32(_mm512_mul_ps(b, inv));
      int8_t* dst = q.data() + r * k + g * GROUP;
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm512_cvtsepi32_epi8(qa));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 16), _mm512_cvtsepi32_epi8(qb));
      // The sum of the quantized values, not of x: then a q4 row computes exactly w . x~, whose
      // error is w . (x~ - x); with x's own sum the large mean of the codes would multiply x~ - x.
      const float qsum = s * float(_mm512_reduce_add_epi32(_mm512_add_epi32(qa, qb)));
      scale[r * groups + g] = s;
      sum[r * groups + g] = qsum;
      off += 128.f * qsum;
    }
    offset[r] = off;
  }

  void quantize(const float* x, int64_t rows_, int64_t k_) {
    resize(rows_, k_);
    for (int64_t r = 0; r < rows; ++r) quantize_row(r, x + r * k);
  }
};

// The weights are stored in blocks of 16 output rows, so that one `vpdpbusd` multiplies 4 inputs into
// all 16 rows at once (lane j is row j) and the int32 sums of a group need one conversion for 16 rows.
//   q4: per block and group, 256 bytes: load i (0..3) of 64 bytes holds, in lane j, byte t,
//       the code of row j at k = 4i + t (low nibble) and at k = 4(i + 4) + t (high nibble);
//       then bf16 scales [16] and minimums [16] per block and group: scale_min [N/16, G, 2, 16].
//   q8: per block and group, 512 bytes: load c (0..7) holds, in lane j, byte t, row j at k = 4c + t.
constexpr int64_t ROWS = 16;
constexpr int64_t PREFETCH_BLOCKS = 1;  // how far ahead the kernels prefetch weights (a hint: past the end is harmless;
                                        // measured: 1 beat 2 by 1-5%, and 4 lost 3-7%)
// A linear's smallest chunk: 1 / (GRAIN_SPLIT x threads) of it. Measured (bench.bench_ab): 2 beat 4 by ~3%, 16 was
// slower still; 1 (one chunk a thread) gained another 1-2% but leaves no chunk to take from a thread the OS has
// put aside mid-step.
constexpr int64_t GRAIN_SPLIT = 2;

// Ask for `lines` cache lines from p on: the hardware prefetcher alone leaves the weight loads waiting.
inline void prefetch_lines(const void* p, int lines) {
  for (int line = 0; line < lines; ++line) _mm_prefetch(static_cast<const char*>(p) + 64 * line, _MM_HINT_T0);
}

inline __m512i broadcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof v);
  return _mm512_set1_epi32(v);
}

// The int32 dot products of 32 activations with 16 weight rows (op: 8 operands of 4 inputs each), in
// two independent chains so that the multiply-adds overlap instead of waiting on each other.
inline __m512i dot32(const __m512i* op, const int8_t* xq) {
  __m512i even = _mm512_setzero_si512(), odd = _mm512_setzero_si512();
  for (int c = 0; c < 8; c += 2) {
    even = _mm512_dpbusd_epi32(even, op[c], broadcast4(xq + 4 * c));
    odd = _mm512_dpbusd_epi32(odd, op[c + 1], broadcast4(xq + 4 * c + 4));
  }
  return _mm512_add_epi32(even, odd);
}

// The output rows of the block starting at n that exist (the last block may be partial).
inline __mmask16 block_mask(int64_t n, int64_t n_out) {
  return n + ROWS <= n_out ? __mmask16(0xffff) : __mmask16((1u << (n_out - n)) - 1);
}

// Finish a q8 block for `rows` rows: y = row scale * (sum - the +128 offset's share).
inline void store_q8_block(const __m512* acc, int rows, const float* row_scale, const QuantizedRows& x, int64_t r0,
                           float* y, int64_t ldy, int64_t blk, int64_t n_out) {
  const int64_t n = blk * ROWS;
  const __m512 rs = _mm512_loadu_ps(row_scale + n);
  for (int i = 0; i < rows; ++i)
    _mm512_mask_storeu_ps(y + (r0 + i) * ldy + n, block_mask(n, n_out),
                          _mm512_mul_ps(rs, _mm512_sub_ps(acc[i], _mm512_set1_ps(x.offset[r0 + i]))));
}

// One q4 block's group of codes (256 bytes at w) as the 8 operands of 4 inputs x 16 rows that
// `vpdpbusd` takes, which are also the 8 rows of 64 bytes of an AMX operand tile.
inline void unpack_q4_group(const uint8_t* w, __m512i* op) {
  const __m512i low = _mm512_set1_epi8(0x0f);
  for (int i = 0; i < 4; ++i) {
    const __m512i raw = _mm512_loadu_si512(w + 64 * i);
    op[i] = _mm512_and_si512(raw, low);
    op[i + 4] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), low);
  }
}

// Adds one group to a q4 row's two sums: its int32 dot products times the group's scale and the row's
// activation scale, and the group's minimum times the row's quantized sum. Both q4 kernels call this,
// so a row gets the same bits from either.
inline void add_q4_group(__m512& acc, __m512& mins, __m512i dot, __m512 scale, __m512 minimum, float x_scale,
                         float x_sum) {
  acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(scale, _mm512_set1_ps(x_scale)), acc);
  mins = _mm512_fmadd_ps(minimum, _mm512_set1_ps(x_sum), mins);
}

// Output rows [r0, r0 + NB) and weight blocks [b0, b1) of y = x @ W.T, q4 weights.
#ifndef CHATCORE_AVX2
template <int NB>
void q4_tile(const uint8_t* qw, const uint16_t* sm, const QuantizedRows& x, int64_t r0, float* y, int64_t ldy,
             int64_t b0, int64_t b1, int64_t n_out) {
  const int64_t K = x.k, G = x.groups;
  for (int64_t blk = b0; blk < b1; ++blk) {
    __m512 acc[NB], mins[NB];
    for (int i = 0; i < NB; ++i) acc[i] = _mm512_setzero_ps(), mins[i] = _mm512_setzero_ps();
    for (int64_t g = 0; g < G; ++g) {
      const uint8_t* w = qw + (blk * G + g) * 256;
      prefetch_lines(w + PREFETCH_BLOCKS * G * 256, 4);  // the same group PREFETCH_BLOCKS blocks on
      prefetch_lines(sm + ((blk + PREFETCH_BLOCKS) * G + g) * 2 * ROWS, 1);
      __m512i op[8];
      unpack_q4_group(w, op);
      const uint16_t* s = sm + (blk * G + g) * 2 * ROWS;
      const __m512 scale = load_bf16x16(s), minimum = load_bf16x16(s + ROWS);
#pragma GCC unroll 8
      for (int i = 0; i < NB; ++i) {
        const int64_t r = r0 + i;
        add_q4_group(acc[i], mins[i], dot32(op, x.q.data() + r * K + g * GROUP), scale, minimum, x.scale[r * G + g],
                     x.sum[r * G + g]);
      }
    }
    const int64_t n = blk * ROWS;
    for (int i = 0; i < NB; ++i)
      _mm512_mask_storeu_ps(y + (r0 + i) * ldy + n, block_mask(n, n_out), _mm512_add_ps(acc[i], mins[i]));
  }
}
#else
// Rows r0.. r0 + rows - 1 of y, columns n.. n + 7 where `bits` has them: factor * acc[i].
inline void store_half(float* y, int64_t ldy, int64_t r0, int rows, int64_t n, int bits, const __m256* acc,
                       __m256 factor) {
  for (int i = 0; i < rows; ++i) {
    float* out = y + (r0 + i) * ldy + n;
    const __m256 v = _mm256_mul_ps(factor, acc[i]);
    if (bits == 0xff) {
      _mm256_storeu_ps(out, v);
    } else {
      alignas(32) float lanes[8];
      _mm256_store_ps(lanes, v);
      for (int j = 0; j < 8; ++j)
        if (bits >> j & 1) out[j] = lanes[j];
    }
  }
}

// The loop both AVX2 products share, written for AVX2's 8-lane registers rather than through the
// 512-bit emulation (which measured ~45 cycles per row, group and block at 8 rows: its 64-byte values
// spill, AVX2 having 16 registers). A block's 16 output rows are two independent halves, the 32-byte
// halves of each 64-byte load, done one after the other. add_group(blk, h, g, acc) adds group g of
// half h to the NB rows' sums; factor(column) gives the 8 columns' factor at the store.
template <int NB, class AddGroup, class Factor>
__attribute__((always_inline)) inline void by_halves(int64_t G, int64_t r0, float* y, int64_t ldy, int64_t b0, int64_t b1, int64_t n_out,
                      const AddGroup& add_group, const Factor& factor) {
  for (int64_t blk = b0; blk < b1; ++blk) {
    const int64_t n = blk * ROWS;
    const __mmask16 valid = block_mask(n, n_out);
    for (int h = 0; h < 2; ++h) {  // output rows n + 8h .. n + 8h + 7
      __m256 acc[NB];
      for (int i = 0; i < NB; ++i) acc[i] = _mm256_setzero_ps();
      for (int64_t g = 0; g < G; ++g) add_group(blk, h, g, acc);
      store_half(y, ldy, r0, NB, n + 8 * h, (valid >> (8 * h)) & 0xff, acc, factor(n + 8 * h));
    }
  }
}

// The int32 sums of 4 products in each lane of signed bytes a (|a| given too) and b: |a| times b
// with a's sign (vpmaddubsw takes unsigned bytes first), pair sums within 2 x 128 x 127, widened.
inline __m256i signed_dot4(__m256i magnitude, __m256i a, __m256i b) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(b, a)), _mm256_set1_epi16(1));
}

inline __m256 load_bf16x8(const uint16_t* p) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
}

// q4 on AVX2. A group's codes times 4 activations go through vpmaddubsw (codes below 16, so a group's
// 8 int16 pair sums stay below 2 x 15 x 128 x 8 = 30,720: no overflow), then one vpmaddwd widens them
// to int32. The group's scale and minimum join one sum per row.
template <int NB>
void q4_tile(const uint8_t* qw, const uint16_t* sm, const QuantizedRows& x, int64_t r0, float* y, int64_t ldy,
             int64_t b0, int64_t b1, int64_t n_out) {
  const int64_t K = x.k, G = x.groups;
  const __m256i low_nibbles = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
  auto add_group = [&](int64_t blk, int h, int64_t g, __m256* acc) __attribute__((always_inline)) {
    const uint8_t* w = qw + (blk * G + g) * 256;
    if (h == 0) prefetch_lines(w + PREFETCH_BLOCKS * G * 256, 4);  // the second half reads the same lines
    __m256i op[8];
    for (int i = 0; i < 4; ++i) {
      const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 64 * i + 32 * h));
      op[i] = _mm256_and_si256(raw, low_nibbles);
      op[i + 4] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low_nibbles);
    }
    const uint16_t* s = sm + (blk * G + g) * 2 * ROWS + 8 * h;
    const __m256 scale = load_bf16x8(s), minimum = load_bf16x8(s + ROWS);
#pragma GCC unroll 8
    for (int i = 0; i < NB; ++i) {
      const int64_t r = r0 + i;
      const int8_t* xq = x.q.data() + r * K + g * GROUP;
      __m256i pairs = _mm256_setzero_si256();
      for (int c = 0; c < 8; ++c) {
        int32_t four;
        std::memcpy(&four, xq + 4 * c, sizeof four);
        pairs = _mm256_add_epi16(pairs, _mm256_maddubs_epi16(op[c], _mm256_set1_epi32(four)));
      }
      const __m256 dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
      acc[i] = _mm256_fmadd_ps(dot, _mm256_mul_ps(scale, _mm256_set1_ps(x.scale[r * G + g])), acc[i]);
      acc[i] = _mm256_fmadd_ps(minimum, _mm256_set1_ps(x.sum[r * G + g]), acc[i]);
    }
  };
  by_halves<NB>(G, r0, y, ldy, b0, b1, n_out, add_group, [](int64_t) { return _mm256_set1_ps(1.f); });
}
#endif

// Output rows [r0, r0 + NB) and weight blocks [b0, b1) of y = x @ W.T, q8 weights.
#ifndef CHATCORE_AVX2
template <int NB>
void q8_tile(const uint8_t* qw, const float* row_scale, const QuantizedRows& x, int64_t r0, float* y, int64_t ldy,
             int64_t b0, int64_t b1, int64_t n_out) {
  const int64_t K = x.k, G = x.groups;
  for (int64_t blk = b0; blk < b1; ++blk) {
    __m512 acc[NB];
    for (int i = 0; i < NB; ++i) acc[i] = _mm512_setzero_ps();
    for (int64_t g = 0; g < G; ++g) {
      const uint8_t* w = qw + (blk * G + g) * 512;
      prefetch_lines(w + PREFETCH_BLOCKS * G * 512, 8);
      __m512i op[8];
      for (int c = 0; c < 8; ++c) op[c] = _mm512_loadu_si512(w + 64 * c);
#pragma GCC unroll 8
      for (int i = 0; i < NB; ++i) {
        const int64_t r = r0 + i;
        acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot32(op, x.q.data() + r * K + g * GROUP)),
                                 _mm512_set1_ps(x.scale[r * G + g]), acc[i]);
      }
    }
    store_q8_block(acc, NB, row_scale, x, r0, y, ldy, blk, n_out);
  }
}
#else
// q8 on AVX2, through by_halves as q4_tile. The codes are stored +128 for vpdpbusd's unsigned operand,
// which vpmaddubsw would saturate on (255 x 127 x 2 > 32,767). So each code becomes its signed weight
// (xor 0x80, |w| <= 127) for signed_dot4; two of its pair sums could overflow int16, so each 4-input
// chunk is widened at once; and there is no +128 share to take off.
template <int NB>
void q8_tile(const uint8_t* qw, const float* row_scale, const QuantizedRows& x, int64_t r0, float* y, int64_t ldy,
             int64_t b0, int64_t b1, int64_t n_out) {
  const int64_t K = x.k, G = x.groups;
  const __m256i flip = _mm256_set1_epi8(char(0x80));
  auto add_group = [&](int64_t blk, int h, int64_t g, __m256* acc) __attribute__((always_inline)) {
    const uint8_t* w = qw + (blk * G + g) * 512;
    if (h == 0) prefetch_lines(w + PREFETCH_BLOCKS * G * 512, 8);  // the second half reads the same lines
    __m256i weight[8], magnitude[8];
    for (int c = 0; c < 8; ++c) {
      weight[c] = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 64 * c + 32 * h)), flip);
      magnitude[c] = _mm256_abs_epi8(weight[c]);
    }
#pragma GCC unroll 8
    for (int i = 0; i < NB; ++i) {
      const int64_t r = r0 + i;
      const int8_t* xq = x.q.data() + r * K + g * GROUP;
      __m256i sum = _mm256_setzero_si256();
      for (int c = 0; c < 8; ++c) {
        int32_t four;
        std::memcpy(&four, xq + 4 * c, sizeof four);
        sum = _mm256_add_epi32(sum, signed_dot4(magnitude[c], weight[c], _mm256_set1_epi32(four)));
      }
      acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_set1_ps(x.scale[r * G + g]), acc[i]);
    }
  };
  // row_scale has N rounded up to 16: a half's 8 always exist.
  by_halves<NB>(G, r0, y, ldy, b0, b1, n_out, add_group, [&](int64_t n) { return _mm256_loadu_ps(row_scale + n); });
}
#endif

#ifdef __AMX_INT8__
// With several rows of activations the vpdpbusd kernels above are bound by that one instruction (one a
// cycle, 64 multiply-adds). AMX multiplies a whole tile: up to 16 rows x 32 inputs x 16 weight rows in
// one `tdpbsud` (signed activations times unsigned codes, the same arithmetic). q8 weight blocks are
// already in the tile layout AMX wants for its second operand: 8 rows of 4 inputs x 16 outputs.
constexpr int AMX_ROWS = 16;  // activation rows per tile
constexpr int64_t AMX_MIN_ROWS = 4;  // below this the vpdpbusd kernels are faster
constexpr int64_t AMX_Q4_MIN_ROWS = 16;  // q4 from here on: prompt chunks (decode steps carry 8 rows at most)

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Whether this process may use AMX: Linux hands out the tile state only on request.
bool amx_ready() {
  static const bool ready = [] {
    constexpr long ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18;
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
  }();
  return ready;
}

// Two sets of tiles, so that a group's product runs while the previous group's sums are scaled:
// set 0 is tmm0 (int32 sums, rows x 16), tmm1 (activations, rows x 32 int8), tmm2 (codes, 8 x 64);
// set 1 is tmm3, tmm4, tmm5.
void configure_tiles(int rows) {
  TileConfig cfg;
  for (int set = 0; set < 2; ++set) {
    cfg.rows[3 * set] = uint8_t(rows), cfg.colsb[3 * set] = 64;
    cfg.rows[3 * set + 1] = uint8_t(rows), cfg.colsb[3 * set + 1] = 32;
    cfg.rows[3 * set + 2] = 8, cfg.colsb[3 * set + 2] = 64;
  }
  // GCC does not count the config's bytes as read by ldtilecfg and may drop the stores above as dead
  // (it did, in an out-of-line copy of this function: ldtilecfg then faulted on stale stack bytes).
  asm volatile("" : : "r"(&cfg) : "memory");
  _tile_loadconfig(&cfg);
}

// The tile intrinsics take their tile numbers as literals.
#define CHATCORE_AMX_PRODUCT(C, A, B, activations, stride, codes) \
  do {                                                            \
    _tile_zero(C);                                                \
    _tile_loadd(A, activations, stride);                          \
    _tile_loadd(B, codes, 64);                                    \
    _tile_dpbsud(C, A, B);                                        \
  } while (0)

// Rows [r0, r0 + rows) and weight blocks [b0, b1) of y = x @ W.T on AMX, q8 weights (their blocks are
// tiles as stored). For q4 weights in decode steps AMX measured slower than vpdpbusd here: a tile
// product per group of 32, its sums kept in registers, made the whole step 1.2x (8 rows) to 1.4x
// (2 rows) slower (bench.bench_ab); unpacking each group into a tile and storing every group's sums
// apart costs more than the multiply-adds it saves.
void amx_q8_tile(const uint8_t* qw, const float* row_scale, const QuantizedRows& x, int64_t r0, int rows, float* y,
                 int64_t ldy, int64_t b0, int64_t b1, int64_t n_out) {
  const int64_t K = x.k, G = x.groups;
  alignas(64) int32_t sums[2][AMX_ROWS * 16];
  __m512 acc[AMX_ROWS];
  const int8_t* xq = x.q.data() + r0 * K;
  configure_tiles(rows);
  auto start = [&](int64_t blk, int64_t g) {  // group g's product, on tile set g % 2
    prefetch_lines(qw + ((blk + PREFETCH_BLOCKS) * G + g) * 512, 8);
    if (g & 1) CHATCORE_AMX_PRODUCT(3, 4, 5, xq + g * GROUP, K, qw + (blk * G + g) * 512);
    else CHATCORE_AMX_PRODUCT(0, 1, 2, xq + g * GROUP, K, qw + (blk * G + g) * 512);
  };
  auto scale = [&](int64_t g) {  // add group g's sums, stored in sums[g % 2]
    for (int i = 0; i < rows; ++i) {
      const __m512 dot = _mm512_cvtepi32_ps(_mm512_load_si512(sums[g & 1] + 16 * i));
      acc[i] = _mm512_fmadd_ps(dot, _mm512_set1_ps(x.scale[(r0 + i) * G + g]), acc[i]);
    }
  };
  for (int64_t blk = b0; blk < b1; ++blk) {
    for (int i = 0; i < rows; ++i) acc[i] = _mm512_setzero_ps();
    start(blk, 0);
    for (int64_t g = 0; g < G; ++g) {
      if (g + 1 < G) start(blk, g + 1);
      if (g & 1) _tile_stored(3, sums[1], 64);
      else _tile_stored(0, sums[0], 64);
      if (g > 0) scale(g - 1);  // a group late: its sums have long reached memory
    }
    scale(G - 1);
    store_q8_block(acc, rows, row_scale, x, r0, y, ldy, blk, n_out);
  }
  _tile_release();
}

// Rows [0, x.rows) and weight blocks [b0, b1) of y = x @ W.T on AMX, q4 weights, for prompt chunks of
// AMX_Q4_MIN_ROWS rows or more. Each block's codes are unpacked once into tiles (the same bytes as the
// vpdpbusd kernel's operands) and serve every tile of 16 rows; each group's exact int32 sums are then
// scaled with the very operations of q4_tile, so both kernels give the same bits for the same row.
void amx_q4_rows(const uint8_t* qw, const uint16_t* sm, const QuantizedRows& x, float* y, int64_t ldy, int64_t b0,
                 int64_t b1, int64_t n_out) {
  const int64_t K = x.k, G = x.groups;
  thread_local std::vector<__m512i> codes;  // [G][8]: group g's operand tile, 8 rows of 64 bytes
  codes.resize(G * 8);
  alignas(64) int32_t sums[2][AMX_ROWS * 16];
  alignas(64) float acc[AMX_ROWS * 16], mins[AMX_ROWS * 16];
  configure_tiles(AMX_ROWS);
  for (int64_t blk = b0; blk < b1; ++blk) {
    for (int64_t g = 0; g < G; ++g) {
      const uint8_t* w = qw + (blk * G + g) * 256;
      prefetch_lines(w + PREFETCH_BLOCKS * G * 256, 4);
      unpack_q4_group(w, &codes[g * 8]);
    }
    const uint16_t* scale_min = sm + blk * G * 2 * ROWS;
    for (int64_t r0 = 0; r0 < x.rows; r0 += AMX_ROWS) {
      const int rows = int(std::min<int64_t>(AMX_ROWS, x.rows - r0));
      const int8_t* xq = x.q.data() + r0 * K;  // whole tiles: q has room for them
      auto start = [&](int64_t g) {  // group g's product, on tile set g % 2
        if (g & 1) CHATCORE_AMX_PRODUCT(3, 4, 5, xq + g * GROUP, K, &codes[g * 8]);
        else CHATCORE_AMX_PRODUCT(0, 1, 2, xq + g * GROUP, K, &codes[g * 8]);
      };
      auto scale = [&](int64_t g) {  // add group g's sums, stored in sums[g % 2], as q4_tile does
        const __m512 s = load_bf16x16(scale_min + g * 2 * ROWS), minimum = load_bf16x16(scale_min + g * 2 * ROWS + ROWS);
        for (int i = 0; i < rows; ++i) {
          const int64_t r = r0 + i;
          __m512 a = _mm512_load_ps(acc + 16 * i), m = _mm512_load_ps(mins + 16 * i);
          add_q4_group(a, m, _mm512_load_si512(sums[g & 1] + 16 * i), s, minimum, x.scale[r * G + g], x.sum[r * G + g]);
          _mm512_store_ps(acc + 16 * i, a);
          _mm512_store_ps(mins + 16 * i, m);
        }
      };
      std::fill(acc, acc + rows * 16, 0.f);
      std::fill(mins, mins + rows * 16, 0.f);
      start(0);
      for (int64_t g = 0; g < G; ++g) {
        if (g + 1 < G) start(g + 1);
        if (g & 1) _tile_stored(3, sums[1], 64);
        else _tile_stored(0, sums[0], 64);
        if (g > 0) scale(g - 1);  // a group late: its sums have long reached memory
      }
      scale(G - 1);
      const int64_t n = blk * ROWS;
      for (int i = 0; i < rows; ++i)
        _mm512_mask_storeu_ps(y + (r0 + i) * ldy + n, block_mask(n, n_out),
                              _mm512_add_ps(_mm512_load_ps(acc + 16 * i), _mm512_load_ps(mins + 16 * i)));
    }
  }
  _tile_release();
}
#endif

// fn(std::integral_constant<int, n>) for n in 1..TILE: the kernels keep their accumulators in
// registers only when the row count is known at compile time.
template <class F>
void with_rows(int n, F&& fn) {
  switch (n) {
    case 1: return fn(std::integral_constant<int, 1>{});
    case 2: return fn(std::integral_constant<int, 2>{});
    case 3: return fn(std::integral_constant<int, 3>{});
    case 4: return fn(std::integral_constant<int, 4>{});
    case 5: return fn(std::integral_constant<int, 5>{});
    case 6: return fn(std::integral_constant<int, 6>{});
    case 7: return fn(std::integral_constant<int, 7>{});
    default: return fn(std::integral_constant<int, TILE>{});
  }
}

// One quantized weight matrix, either format.
struct QLinear {
  int bits = 0;  // 4 or 8
  int64_t out_features = 0, in_features = 0, blocks = 0;
  at::Tensor weight, scales;  // q4: scale_min bf16 [N/16, G, 2, 16]; q8: float [N rounded up to 16]

  QLinear() = default;
  QLinear(int bits_, at::Tensor weight_, at::Tensor scales_, int64_t out_features_, int64_t in_features_)
      : bits(bits_), out_features(out_features_), in_features(in_features_), weight(weight_), scales(scales_) {
    TORCH_CHECK(bits == 4 || bits == 8, "bits must be 4 or 8");
    TORCH_CHECK(in_features > 0 && in_features % GROUP == 0, "in_features must be a positive multiple of 32");
    blocks = (out_features + ROWS - 1) / ROWS;
    const int64_t groups = in_features / GROUP;
    TORCH_CHECK(weight.scalar_type() == at::kByte && weight.is_contiguous() &&
                    weight.numel() == blocks * groups * (bits == 4 ? 256 : 512),
                "weight: uint8 in the packed layout of ", out_features, "x", in_features);
    if (bits == 4) {
      TORCH_CHECK(scales.scalar_type() == at::kBFloat16 && scales.is_contiguous() && scales.numel() == blocks * groups * 2 * ROWS,
                  "q4 scales: bfloat16 [N/16, K/32, 2, 16]");
    } else {
      TORCH_CHECK(scales.scalar_type() == at::kFloat && scales.is_contiguous() && scales.numel() == blocks * ROWS,
                  "q8 scales: float32 [N rounded up to 16]");
    }
  }

  // y [rows, N] = x @ W.T, x already quantized; output rows are ldy apart.
  void apply(const QuantizedRows& x, float* y, int64_t ldy) const {
    TORCH_CHECK(x.k == in_features, "input has ", x.k, " features, the layer takes ", in_features);
    const uint8_t* qw = weight.data_ptr<uint8_t>();
    const int64_t grain = std::max<int64_t>(1, blocks / (GRAIN_SPLIT * at::get_num_threads()));
#ifdef __AMX_INT8__
    if (bits == 8 && x.rows >= AMX_MIN_ROWS && amx_ready()) {
      const float* rs = scales.data_ptr<float>();
      pool().run(blocks, grain, [&](int64_t b0, int64_t b1) {
        for (int64_t r0 = 0; r0 < x.rows; r0 += AMX_ROWS)
          amx_q8_tile(qw, rs, x, r0, int(std::min<int64_t>(AMX_ROWS, x.rows - r0)), y, ldy, b0, b1, out_features);
      });
      return;
    }
    if (bits == 4 && x.rows >= AMX_Q4_MIN_ROWS && amx_ready()) {
      const auto* sm = reinterpret_cast<const uint16_t*>(scales.data_ptr<at::BFloat16>());
      pool().run(blocks, grain, [&](int64_t b0, int64_t b1) { amx_q4_rows(qw, sm, x, y, ldy, b0, b1, out_features); });
      return;
    }
#endif
    pool().run(blocks, grain, [&](int64_t b0, int64_t b1) {
      for (int64_t r0 = 0; r0 < x.rows; r0 += TILE) {
        const int nb = int(std::min<int64_t>(TILE, x.rows - r0));
        with_rows(nb, [&](auto rows) {  // the row count as a compile-time constant
          if (bits == 4)
            q4_tile<rows>(qw, reinterpret_cast<const uint16_t*>(scales.data_ptr<at::BFloat16>()), x, r0, y, ldy, b0,
                          b1, out_features);
          else
            q8_tile<rows>(qw, scales.data_ptr<float>(), x, r0, y, ldy, b0, b1, out_features);
        });
      }
    });
  }

  // The torch-facing form: x [M, K] -> float32 [M, N].
  at::Tensor forward(const at::Tensor& input) const {
    TORCH_CHECK(input.dim() == 2 && input.size(1) == in_features, "input must be [M, ", in_features, "]");
    at::Tensor x = input.to(at::kFloat).contiguous();
    QuantizedRows q;
    q.quantize(x.data_ptr<float>(), x.size(0), in_features);
    at::Tensor y = at::empty({x.size(0), out_features}, x.options());
    apply(q, y.data_ptr<float>(), out_features);
    return y;
  }
};

void rms_norm(const float* x, const float* weight, float eps, int64_t rows, int64_t dim, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    __m512 acc = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= dim; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(xr + i), _mm512_loadu_ps(xr + i), acc);
    float squares = _mm512_reduce_add_ps(acc);
    for (; i < dim; ++i) squares += xr[i] * xr[i];
    const float inv = 1.f / std::sqrt(squares / dim + eps);
    for (int64_t i = 0; i < dim; ++i) out[r * dim + i] = xr[i] * inv * weight[i];
  }
}

// Rotary embedding in transformers' half-split layout, in place on one head vector.
void rotate(float* v, const float* cos, const float* sin, int64_t head_dim) {
  const int64_t half = head_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float a = v[i], b = v[i + half];
    v[i] = a * cos[i] - b * sin[i];
    v[i + half] = b * cos[i + half] + a * sin[i + half];
  }
}

float dot_bf16(const float* q, const uint16_t* k, int64_t d) {
  int64_t i = 0;
  __m512 acc = _mm512_setzero_ps();
  for (; i + 16 <= d; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), load_bf16x16(k + i), acc);
  float s = _mm512_reduce_add_ps(acc);
  for (; i < d; ++i) s += q[i] * bf16_to_float(k[i]);
  return s;
}

void axpy_bf16(float a, const uint16_t* v, float* out, int64_t d) {
  int64_t i = 0;
  const __m512 av = _mm512_set1_ps(a);
  for (; i + 16 <= d; i += 16)
    _mm512_storeu_ps(out + i, _mm512_fmadd_ps(av, load_bf16x16(v + i), _mm512_loadu_ps(out + i)));
  for (; i < d; ++i) out[i] += a * bf16_to_float(v[i]);
}

// The sums of 16 vectors' lanes, as one vector: lane j holds the sum of v[j] (a transposing add tree,
// ~45 instructions instead of 16 horizontal reductions of ~9 each).
inline __m512 sum16(const __m512* v) {
  __m512 pairs[8], quads[4];
  for (int i = 0; i < 8; ++i)  // per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3]
    pairs[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 4; ++i) {  // per 128-bit lane: the lane's sum of each of 4 vectors
    const __m512d a = _mm512_castps_pd(pairs[2 * i]), b = _mm512_castps_pd(pairs[2 * i + 1]);
    quads[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
  }
  // Add the four 128-bit lanes: first within pairs of quads, then across.
  const __m512 lo = _mm512_add_ps(_mm512_shuffle_f32x4(quads[0], quads[1], 0x88), _mm512_shuffle_f32x4(quads[0], quads[1], 0xdd));
  const __m512 hi = _mm512_add_ps(_mm512_shuffle_f32x4(quads[2], quads[3], 0x88), _mm512_shuffle_f32x4(quads[2], quads[3], 0xdd));
  return _mm512_add_ps(_mm512_shuffle_f32x4(lo, hi, 0x88), _mm512_shuffle_f32x4(lo, hi, 0xdd));
}

// How many positions ahead attention prefetches keys and values. Each task streams a short run of
// them (a few kB), too short for the hardware prefetcher to get ahead; measured with both builds
// alternating in one process, 8 rows: 8.14 -> 7.86 ms a step from position 100, 13.2 -> 12.7 from 400.
constexpr int64_t ATTENTION_AHEAD = 16;
constexpr int64_t SHARED_VALUES_MIN_ROWS = 16;  // prompt rows from which attention widens value rows once for all

// scores[t] = scale * q . k_t for t < n, with q rounded to bfloat16 and `vdpbf16ps` (32 products an
// instruction), 16 positions at a time. scores must have room for n rounded up to 16.
template <int HD>
void key_scores(const float* query, float scale, const uint16_t* keys, int64_t n, float* scores) {
  constexpr int CHUNKS = HD / 32;
  __m512bh q[CHUNKS];
  const __m512 s = _mm512_set1_ps(scale);
  for (int c = 0; c < CHUNKS; ++c)
    q[c] = _mm512_cvtne2ps_pbh(_mm512_mul_ps(_mm512_loadu_ps(query + 32 * c + 16), s),
                               _mm512_mul_ps(_mm512_loadu_ps(query + 32 * c), s));
  for (int64_t t0 = 0; t0 < n; t0 += 16) {
    const int count = int(std::min<int64_t>(16, n - t0));
    __m512 part[16];
    for (int j = 0; j < 16; ++j) {
      prefetch_lines(keys + (t0 + ATTENTION_AHEAD + j) * HD, HD * 2 / 64);
      part[j] = _mm512_setzero_ps();
      if (j < count)
        for (int c = 0; c < CHUNKS; ++c)
          part[j] = _mm512_dpbf16_ps(part[j], (__m512bh)_mm512_loadu_si512(keys + (t0 + j) * HD + 32 * c), q[c]);
    }
    _mm512_storeu_ps(scores + t0, sum16(part));
  }
}

// p[0..n) <- exp(p - max p); returns their sum, and the max in *top_out. All in vectors of 16, the last
// one masked: a scalar max is a chain of dependent compares, and scalar exps for a tail of up to 15
// cost as much as the vectors (this runs once per query head, row and layer of every step).
float softmax_numerators(float* p, int64_t n, float* top_out) {
  const __m512 lowest = _mm512_set1_ps(-INFINITY);
  const __mmask16 tail = __mmask16((1u << (n % 16)) - 1);
  const int64_t whole = n - n % 16;
  __m512 top16 = lowest;
  for (int64_t t = 0; t < whole; t += 16) top16 = _mm512_max_ps(top16, _mm512_loadu_ps(p + t));
  if (tail) top16 = _mm512_max_ps(top16, _mm512_mask_loadu_ps(lowest, tail, p + whole));
  const float top = _mm512_reduce_max_ps(top16);
  *top_out = top;
  const __m512 shift = _mm512_set1_ps(top);
  __m512 total = _mm512_setzero_ps();
  for (int64_t t = 0; t < whole; t += 16) {
    const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(p + t), shift));
    _mm512_storeu_ps(p + t, e);
    total = _mm512_add_ps(total, e);
  }
  if (tail) {  // lanes past n add e^-88 (exp16 clamps there), nothing next to a sum of at least 1
    const __m512 e = exp16(_mm512_sub_ps(_mm512_mask_loadu_ps(lowest, tail, p + whole), shift));
    _mm512_mask_storeu_ps(p + whole, tail, e);
    total = _mm512_add_ps(total, e);
  }
  return _mm512_reduce_add_ps(total);
}

// Value rows as weighted_values reads them: the cache's bfloat16 rows, or its int8 rows and their
// scales. A row is widened to float32 16 values at a time.
template <int HD>
struct Bf16Values {
  static constexpr int dim = HD;
  const uint16_t* rows;
  void prefetch(int64_t t) const { prefetch_lines(rows + t * HD, HD * 2 / 64); }
  __m512 load(int64_t t, int i) const { return load_bf16x16(rows + t * HD + i); }
  float scale(int64_t) const { return 1.f; }
};

template <int HD>
struct Int8Values {
  static constexpr int dim = HD;
  const int8_t* rows;
  const float* scales;  // one per row
  void prefetch(int64_t t) const { prefetch_lines(rows + t * HD, HD / 64); }
  __m512 load(int64_t t, int i) const {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rows + t * HD + i))));
  }
  float scale(int64_t t) const { return scales[t]; }
};

// out[g] = weight[g] * sum_t p[g][t] v_t for t < n and each of `heads` query heads (p rows `stride`
// apart, out rows HD apart): each value row is widened once for up to 4 heads, and its scale (an int8
// row's) joins each probability.
#ifndef CHATCORE_AVX2
template <class Values>
void weighted_values(const float* p, int64_t stride, const float* weight, int64_t heads, const Values& values,
                     int64_t n, float* out) {
  constexpr int HD = Values::dim, CHUNKS = HD / 16, BATCH = 4;
  for (int64_t g0 = 0; g0 < heads; g0 += BATCH) {
    const int count = int(std::min<int64_t>(BATCH, heads - g0));
    __m512 acc[BATCH][CHUNKS];
    for (int g = 0; g < BATCH; ++g)
      for (int c = 0; c < CHUNKS; ++c) acc[g][c] = _mm512_setzero_ps();
    for (int64_t t = 0; t < n; ++t) {
      values.prefetch(t + ATTENTION_AHEAD);
      __m512 v[CHUNKS];
      for (int c = 0; c < CHUNKS; ++c) v[c] = values.load(t, 16 * c);
      const float row_scale = values.scale(t);
      for (int g = 0; g < count; ++g) {
        const __m512 pt = _mm512_set1_ps(p[(g0 + g) * stride + t] * row_scale);
        for (int c = 0; c < CHUNKS; ++c) acc[g][c] = _mm512_fmadd_ps(pt, v[c], acc[g][c]);
      }
    }
    for (int g = 0; g < count; ++g) {
      const __m512 w = _mm512_set1_ps(weight[g0 + g]);
      for (int c = 0; c < CHUNKS; ++c) _mm512_storeu_ps(out + (g0 + g) * HD + 16 * c, _mm512_mul_ps(acc[g][c], w));
    }
  }
}
#else
// weighted_values on AVX2: its 512-bit form keeps 4 heads' sums of 4 vectors each, 32 AVX2 registers,
// and spilled. Here the value rows are widened (and scaled) once into a buffer, and each head then
// sums over it with its 8 vectors of sums in registers, 64 dimensions at a time.
//
// A prompt's rows read the same value rows, so the step widens them once for all its rows
// (widen_values) and each row sums over that (sum_widened): the same bits as widening per row.
template <class Values>
void widen_values(const Values& values, int64_t n, float* rows) {
  constexpr int HD = Values::dim;
  for (int64_t t = 0; t < n; ++t) {
    values.prefetch(t + ATTENTION_AHEAD);
    const __m512 row_scale = _mm512_set1_ps(values.scale(t));
    for (int i = 0; i < HD; i += 16) _mm512_storeu_ps(rows + t * HD + i, _mm512_mul_ps(values.load(t, i), row_scale));
  }
}

template <int HD>
void sum_widened(const float* p, int64_t stride, const float* weight, int64_t heads, const float* rows, int64_t n,
                 float* out) {
  constexpr int SLAB = 64;
  for (int64_t g = 0; g < heads; ++g) {
    for (int d0 = 0; d0 < HD; d0 += SLAB) {
      __m256 acc[SLAB / 8];
      for (auto& a : acc) a = _mm256_setzero_ps();
      for (int64_t t = 0; t < n; ++t) {
        const __m256 pt = _mm256_set1_ps(p[g * stride + t]);
        const float* row = rows + t * HD + d0;
        for (int c = 0; c < SLAB / 8; ++c) acc[c] = _mm256_fmadd_ps(pt, _mm256_loadu_ps(row + 8 * c), acc[c]);
      }
      const __m256 w = _mm256_set1_ps(weight[g]);
      for (int c = 0; c < SLAB / 8; ++c) _mm256_storeu_ps(out + g * HD + d0 + 8 * c, _mm256_mul_ps(acc[c], w));
    }
  }
}

template <class Values>
void weighted_values(const float* p, int64_t stride, const float* weight, int64_t heads, const Values& values,
                     int64_t n, float* out) {
  thread_local std::vector<float> rows;
  rows.resize(n * Values::dim);
  widen_values(values, n, rows.data());
  sum_widened<Values::dim>(p, stride, weight, heads, rows.data(), n, out);
}
#endif

// One head vector (d a multiple of 16) as int8 with a shared scale (max |x| / 127), the way the cache
// keeps it; returns the scale. `flip` (0x80) stores a key as uint8 q + 128. Rounds to nearest even, as
// torch.round does.
inline float quantize_head(const float* x, int64_t d, uint8_t* dst, uint8_t flip) {
  __m512 top = _mm512_setzero_ps();
  for (int64_t i = 0; i < d; i += 16) top = _mm512_max_ps(top, _mm512_abs_ps(_mm512_loadu_ps(x + i)));
  const float amax = _mm512_reduce_max_ps(top);
  const __m512 inv = _mm512_set1_ps(amax > 0.f ? 127.f / amax : 0.f);
  const __m128i bias = _mm_set1_epi8(char(flip));
  for (int64_t i = 0; i < d; i += 16) {
    const __m128i q = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + i), inv)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), _mm_xor_si128(q, bias));
  }
  return amax / 127.f;
}

// key_scores over an int8 cache: the query is quantized to int8 once, and one `vpdpbusd` takes 64
// products of a key (uint8 k + 128) with it; the +128 adds 128 * sum(query codes) to every dot product,
// taken off before each position's scale. Integer sums below 2^24: exact in float32.
#ifndef CHATCORE_AVX2
template <int HD>
void key_scores_int8(const float* query, float scale, const uint8_t* keys, const float* key_scale, int64_t n,
                     float* scores) {
  constexpr int CHUNKS = HD / 64;
  alignas(64) uint8_t codes[HD];
  const float query_scale = quantize_head(query, HD, codes, 0);
  __m512i q[CHUNKS];
  int32_t code_sum = 0;
  for (int i = 0; i < HD; ++i) code_sum += int8_t(codes[i]);
  for (int c = 0; c < CHUNKS; ++c) q[c] = _mm512_load_si512(codes + 64 * c);
  const __m512 offset = _mm512_set1_ps(128.f * float(code_sum)), factor = _mm512_set1_ps(scale * query_scale);
  for (int64_t t0 = 0; t0 < n; t0 += 16) {
    const int count = int(std::min<int64_t>(16, n - t0));
    __m512 part[16];
    for (int j = 0; j < 16; ++j) {
      prefetch_lines(keys + (t0 + ATTENTION_AHEAD + j) * HD, HD / 64);
      __m512i sum = _mm512_setzero_si512();
      if (j < count)
        for (int c = 0; c < CHUNKS; ++c) sum = _mm512_dpbusd_epi32(sum, _mm512_loadu_si512(keys + (t0 + j) * HD + 64 * c), q[c]);
      part[j] = _mm512_cvtepi32_ps(sum);
    }
    const __m512 positions = _mm512_maskz_loadu_ps(__mmask16((1u << count) - 1), key_scale + t0);
    _mm512_storeu_ps(scores + t0, _mm512_mul_ps(_mm512_mul_ps(_mm512_sub_ps(sum16(part), offset), positions), factor));
  }
}
#else
// key_scores_int8 on AVX2, 8 positions at a time. vpmaddubsw would saturate on the +128 keys, so each
// key byte becomes its signed code again (xor 0x80) for signed_dot4 with the query's codes; no +128
// share to take off.
// Eight positions' int32 sums are reduced together by a tree of horizontal adds.
template <int HD>
void key_scores_int8(const float* query, float scale, const uint8_t* keys, const float* key_scale, int64_t n,
                     float* scores) {
  constexpr int CHUNKS = HD / 32;
  alignas(64) uint8_t codes[HD];
  const float query_scale = quantize_head(query, HD, codes, 0);
  __m256i q[CHUNKS], magnitude[CHUNKS];
  for (int c = 0; c < CHUNKS; ++c) {
    q[c] = _mm256_load_si256(reinterpret_cast<const __m256i*>(codes + 32 * c));
    magnitude[c] = _mm256_abs_epi8(q[c]);
  }
  const __m256i flip = _mm256_set1_epi8(char(0x80));
  const __m256 factor = _mm256_set1_ps(scale * query_scale);
  for (int64_t t0 = 0; t0 < n; t0 += 8) {
    const int count = int(std::min<int64_t>(8, n - t0));
    __m256i sums[8];
    for (int j = 0; j < 8; ++j) {
      prefetch_lines(keys + (t0 + ATTENTION_AHEAD + j) * HD, HD / 64);
      sums[j] = _mm256_setzero_si256();
      if (j < count)
        for (int c = 0; c < CHUNKS; ++c) {
          const __m256i key = _mm256_xor_si256(
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(keys + (t0 + j) * HD + 32 * c)), flip);
          sums[j] = _mm256_add_epi32(sums[j], signed_dot4(magnitude[c], q[c], key));
        }
    }
    // Lane j of the result: the sum of sums[j]'s lanes.
    const __m256i h01 = _mm256_hadd_epi32(sums[0], sums[1]), h23 = _mm256_hadd_epi32(sums[2], sums[3]);
    const __m256i h45 = _mm256_hadd_epi32(sums[4], sums[5]), h67 = _mm256_hadd_epi32(sums[6], sums[7]);
    const __m256i h0123 = _mm256_hadd_epi32(h01, h23), h4567 = _mm256_hadd_epi32(h45, h67);
    const __m256i total = _mm256_add_epi32(_mm256_permute2x128_si256(h0123, h4567, 0x20),
                                           _mm256_permute2x128_si256(h0123, h4567, 0x31));
    alignas(32) float out[8], positions[8] = {};
    std::memcpy(positions, key_scale + t0, sizeof(float) * count);
    _mm256_store_ps(out, _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(total), _mm256_load_ps(positions)), factor));
    std::memcpy(scores + t0, out, sizeof(float) * count);
  }
}
#endif

struct Layer {
  std::vector<float> attn_norm, mlp_norm;
  QLinear wqkv, wo, w13, w2;
  at::Tensor k_cache, v_cache;  // [slots, kv_heads, length, head_dim]: bf16, or uint8 keys and int8 values
  at::Tensor k_scale, v_scale;  // float32 [slots, kv_heads, length] for an int8 cache, else undefined
  bool int8() const { return k_scale.defined(); }
};

// The whole decoder for one-token steps of up to `slots` sequences.
class Decoder {
 public:
  Decoder(at::Tensor embed, at::Tensor final_norm, QLinear head, at::Tensor cos, at::Tensor sin, int64_t n_heads,
          int64_t n_kv_heads, int64_t head_dim, int64_t intermediate, double eps)
      : embed_(embed.contiguous()), head_(std::move(head)), n_heads_(n_heads), n_kv_(n_kv_heads), head_dim_(head_dim),
        intermediate_(intermediate), eps_(float(eps)) {
    TORCH_CHECK(embed_.scalar_type() == at::kBFloat16 && embed_.dim() == 2, "embed: bfloat16 [vocab, dim]");
    dim_ = embed_.size(1);
    final_norm_ = to_vector(final_norm);
    cos_ = cos.to(at::kFloat).contiguous();
    sin_ = sin.to(at::kFloat).contiguous();
    TORCH_CHECK(cos_.dim() == 2 && cos_.size(1) == head_dim, "cos: [length, head_dim]");
  }

  void add_layer(at::Tensor attn_norm, at::Tensor mlp_norm, QLinear wqkv, QLinear wo, QLinear w13, QLinear w2,
                 at::Tensor k_cache, at::Tensor v_cache, const c10::optional<at::Tensor>& k_scale,
                 const c10::optional<at::Tensor>& v_scale) {
    TORCH_CHECK(k_cache.is_contiguous() && k_cache.dim() == 4 && k_cache.size(1) == n_kv_ &&
                    k_cache.size(3) == head_dim_ && v_cache.sizes() == k_cache.sizes() && v_cache.is_contiguous(),
                "caches: [slots, kv_heads, length, head_dim], contiguous");
    const bool int8 = k_scale.has_value();
    TORCH_CHECK(int8 == v_scale.has_value(), "an int8 cache needs both scales");
    if (int8) {
      const at::IntArrayRef positions = k_cache.sizes().slice(0, 3);
      TORCH_CHECK(k_cache.scalar_type() == at::kByte && v_cache.scalar_type() == at::kChar &&
                      (head_dim_ == 64 || head_dim_ == 128),
                  "int8 caches: uint8 keys and int8 values, for a head_dim of 64 or 128");
      TORCH_CHECK(k_scale->scalar_type() == at::kFloat && k_scale->is_contiguous() && k_scale->sizes() == positions &&
                      v_scale->scalar_type() == at::kFloat && v_scale->is_contiguous() && v_scale->sizes() == positions,
                  "cache scales: float32 [slots, kv_heads, length], contiguous");
    } else {
      TORCH_CHECK(k_cache.scalar_type() == at::kBFloat16 && v_cache.scalar_type() == at::kBFloat16,
                  "caches: bfloat16, or uint8 keys and int8 values with scales");
    }
    TORCH_CHECK(wqkv.in_features == dim_ && wqkv.out_features == (n_heads_ + 2 * n_kv_) * head_dim_ &&
                    wo.in_features == n_heads_ * head_dim_ && wo.out_features == dim_ && w13.in_features == dim_ &&
                    w13.out_features == 2 * intermediate_ && w2.in_features == intermediate_ && w2.out_features == dim_,
                "layer shapes do not match the decoder's");
    layers_.push_back(Layer{to_vector(attn_norm), to_vector(mlp_norm), std::move(wqkv), std::move(wo), std::move(w13),
                            std::move(w2), k_cache, v_cache, int8 ? *k_scale : at::Tensor(),
                            int8 ? *v_scale : at::Tensor()});
  }

  // One step for rows of (token, cache slot, position): a batch of sequences one token each, a chunk
  // of one prompt, or both. Each row attends to its slot's positions 0..position, which this step
  // writes first for all rows, so a prompt chunk is causal. Returns float32 logits [R, vocab] for the
  // rows listed in logit_rows (a prompt needs only its last).
  at::Tensor forward(const at::Tensor& tokens_in, const at::Tensor& slots_in, const at::Tensor& positions_in,
                     const at::Tensor& logit_rows_in) {
    at::Tensor tokens = tokens_in.to(at::kLong).contiguous(), slots = slots_in.to(at::kLong).contiguous();
    at::Tensor positions = positions_in.to(at::kLong).contiguous(), logit_rows = logit_rows_in.to(at::kLong).contiguous();
    const int64_t B = tokens.numel();
    TORCH_CHECK(B > 0 && slots.numel() == B && positions.numel() == B,
                "tokens, slots and positions must have the same, non-zero length");
    TORCH_CHECK(!layers_.empty(), "the decoder has no layers");
    const int64_t cache_slots = layers_[0].k_cache.size(0), length = layers_[0].k_cache.size(2);
    const int64_t* tok = tokens.data_ptr<int64_t>();
    const int64_t* slot = slots.data_ptr<int64_t>();
    const int64_t* pos = positions.data_ptr<int64_t>();
    const int64_t* want = logit_rows.data_ptr<int64_t>();
    for (int64_t b = 0; b < B; ++b) {
      TORCH_CHECK(tok[b] >= 0 && tok[b] < embed_.size(0), "token id ", tok[b], " out of range");
      TORCH_CHECK(slot[b] >= 0 && slot[b] < cache_slots, "slot ", slot[b], " out of range");
      TORCH_CHECK(pos[b] >= 0 && pos[b] < length && pos[b] < cos_.size(0), "position ", pos[b], " out of range");
    }
    for (int64_t r = 0; r < logit_rows.numel(); ++r)
      TORCH_CHECK(want[r] >= 0 && want[r] < B, "logit row ", want[r], " out of range");
    const int64_t D = dim_, H = n_heads_, hd = head_dim_, I = intermediate_;
    const int64_t qkv_width = (H + 2 * n_kv_) * hd;
    std::vector<float> x(B * D), h(B * D), qkv(B * qkv_width), attn(B * H * hd), ff(B * 2 * I), act(B * I);
    const auto* table = reinterpret_cast<const uint16_t*>(embed_.data_ptr<at::BFloat16>());
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < D; ++i) x[b * D + i] = bf16_to_float(table[tok[b] * D + i]);

    QuantizedRows q;
    // Per-row work between the matrix products runs on the pool too, a row a task, fused so that
    // each row is read once: add the residual, normalize, quantize for the next product.
    auto rows = [&](const auto& fn) { pool().run(B, 1, [&](int64_t r0, int64_t r1) { for (int64_t r = r0; r < r1; ++r) fn(r); }); };
    auto add_residual = [&](int64_t r) { for (int64_t i = 0; i < D; ++i) x[r * D + i] += h[r * D + i]; };
    auto norm_and_quantize = [&](int64_t r, const std::vector<float>& norm) {
      rms_norm(&x[r * D], norm.data(), eps_, 1, D, &h[r * D]);
      q.quantize_row(r, &h[r * D]);
    };
    q.resize(B, D);
    rows([&](int64_t r) { norm_and_quantize(r, layers_[0].attn_norm); });
    for (size_t l = 0; l < layers_.size(); ++l) {
      Layer& layer = layers_[l];
      layer.wqkv.apply(q, qkv.data(), qkv_width);
      attention(layer, qkv.data(), slot, pos, B, attn.data());
      q.resize(B, H * hd);
      rows([&](int64_t r) { q.quantize_row(r, &attn[r * H * hd]); });
      layer.wo.apply(q, h.data(), D);
      q.resize(B, D);
      rows([&](int64_t r) { add_residual(r); norm_and_quantize(r, layer.mlp_norm); });
      layer.w13.apply(q, ff.data(), 2 * I);
      q.resize(B, I);
      rows([&](int64_t r) {
        silu_mul(&ff[r * 2 * I], &ff[r * 2 * I + I], &act[r * I], I);
        q.quantize_row(r, &act[r * I]);
      });
      layer.w2.apply(q, h.data(), D);
      const bool last = l + 1 == layers_.size();
      q.resize(B, D);
      rows([&](int64_t r) {
        add_residual(r);
        if (!last) norm_and_quantize(r, layers_[l + 1].attn_norm);  // after the last layer only the logit rows go on
      });
    }
    const int64_t R = logit_rows.numel();
    std::vector<float> last(R * D), normed(R * D);  // R may exceed B: a row may be asked for twice
    for (int64_t r = 0; r < R; ++r) std::copy(&x[want[r] * D], &x[want[r] * D] + D, &last[r * D]);
    rms_norm(last.data(), final_norm_.data(), eps_, R, D, normed.data());
    q.quantize(normed.data(), R, D);
    at::Tensor logits = at::empty({R, head_.out_features}, at::kFloat);
    if (R > 0) head_.apply(q, logits.data_ptr<float>(), head_.out_features);
    return logits;
  }

  // One token for each of B slots (default 0..B-1): tokens, positions, slots int64 [B] -> logits [B, vocab].
  at::Tensor decode(const at::Tensor& tokens, const at::Tensor& positions, const c10::optional<at::Tensor>& slots) {
    const int64_t B = tokens.numel();
    at::Tensor rows = at::arange(B, at::kLong);
    return forward(tokens, slots.has_value() ? *slots : rows, positions, rows);
  }

 private:
  static std::vector<float> to_vector(const at::Tensor& t) {
    at::Tensor f = t.to(at::kFloat).contiguous();
    return std::vector<float>(f.data_ptr<float>(), f.data_ptr<float>() + f.numel());
  }

  // Rotary embedding, cache write and attention over each row's own positions 0..pos[b].
  void attention(Layer& layer, float* qkv, const int64_t* slot, const int64_t* pos, int64_t B, float* out) {
    const int64_t H = n_heads_, Hkv = n_kv_, hd = head_dim_, group = H / Hkv;
    const int64_t qkv_width = (H + 2 * Hkv) * hd, length = layer.k_cache.size(2);
    // Element offsets below are the same for either cache; an int8 cache's elements are bytes.
    const bool int8 = layer.int8();
    auto* kc = static_cast<uint16_t*>(layer.k_cache.data_ptr());
    auto* vc = static_cast<uint16_t*>(layer.v_cache.data_ptr());
    auto* kc8 = static_cast<uint8_t*>(layer.k_cache.data_ptr());
    auto* vc8 = static_cast<int8_t*>(layer.v_cache.data_ptr());
    float* ks = int8 ? layer.k_scale.data_ptr<float>() : nullptr;
    float* vs = int8 ? layer.v_scale.data_ptr<float>() : nullptr;
    // Every row's key and value reach the cache before any row attends: rows of one prompt chunk
    // read each other's.
    pool().run(B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        float* row = qkv + b * qkv_width;
        const float* c = cos_.data_ptr<float>() + pos[b] * hd;
        const float* s = sin_.data_ptr<float>() + pos[b] * hd;
        for (int64_t h = 0; h < H + Hkv; ++h) rotate(row + h * hd, c, s, hd);  // queries, then keys
        for (int64_t h = 0; h < Hkv; ++h) {
          const int64_t position = (slot[b] * Hkv + h) * length + pos[b], at = position * hd;
          if (int8) {
            ks[position] = quantize_head(row + (H + h) * hd, hd, kc8 + at, 0x80);
            vs[position] = quantize_head(row + (H + Hkv + h) * hd, hd, reinterpret_cast<uint8_t*>(vc8 + at), 0);
            continue;
          }
          for (int64_t i = 0; i < hd; ++i) {
            kc[at + i] = float_to_bf16(row[(H + h) * hd + i]);
            vc[at + i] = float_to_bf16(row[(H + Hkv + h) * hd + i]);
          }
        }
      }
    });
    // A prompt's rows (at least SHARED_VALUES_MIN_ROWS of one slot, int8 cache) read the same value rows:
    // on AVX2 they are widened once here for all rows, [Hkv][0..last position][hd], not once per row
    // and key/value head (~30% of a 1,000-token prompt's attention). Same bits either way.
#ifdef CHATCORE_AVX2
    std::vector<float> widened;
    int64_t span = 0;  // positions widened for each key/value head
    if (int8 && B >= SHARED_VALUES_MIN_ROWS && std::all_of(slot, slot + B, [&](int64_t s) { return s == slot[0]; })) {
      span = *std::max_element(pos, pos + B) + 1;
      widened.resize(Hkv * span * hd);
      pool().run(Hkv * span, 64, [&](int64_t i0, int64_t i1) {
        while (i0 < i1) {  // i = kv * span + t
          const int64_t kv = i0 / span, t0 = i0 % span, n = std::min(i1 - i0, span - t0);
          const int64_t position = (slot[0] * Hkv + kv) * length + t0;
          float* rows = widened.data() + (kv * span + t0) * hd;
          if (hd == 64) widen_values(Int8Values<64>{vc8 + position * hd, vs + position}, n, rows);
          else widen_values(Int8Values<128>{vc8 + position * hd, vs + position}, n, rows);
          i0 += n;
        }
      });
    }
#endif
    const float scale = 1.f / std::sqrt(float(hd));
    // Tasks are (row, key/value head, part of the context): a head's `group` query heads share each
    // key and value read; a long context is cut into parts so that even one row's few heads keep
    // every thread busy, and the parts' softmaxes are merged after (as flash-decoding does).
    // A row's cut depends on its own context alone, never on the rows beside it: merged parts round
    // differently from one pass, and an answer decoded beside others must reproduce when re-run alone.
    const int64_t threads = at::get_num_threads();
    const int64_t balance = (2 * threads + Hkv - 1) / Hkv;  // parts for two tasks a thread, for one row
    std::vector<int64_t> parts(B), first(B + 1, 0);
    for (int64_t b = 0; b < B; ++b) {
      parts[b] = std::clamp<int64_t>(std::min(balance, (pos[b] + 1) / ATTENTION_PART_MIN), 1, 8);
      first[b + 1] = first[b] + Hkv * parts[b];
    }
    const int64_t tasks = first[B];
    std::vector<float> part_max(tasks * group), part_sum(tasks * group), part_out(tasks * group * hd);
    pool().run(tasks, 1, [&](int64_t begin, int64_t end) {
      thread_local std::vector<float> probs;  // [group][stride]: exp(score - max) of each query head
      thread_local std::vector<float> weights;
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = std::upper_bound(first.begin(), first.end(), task) - first.begin() - 1;
        const int64_t kv = (task - first[b]) / parts[b], part = (task - first[b]) % parts[b];
        const int64_t n = pos[b] + 1, t0 = n * part / parts[b], count = n * (part + 1) / parts[b] - t0;
        const int64_t stride = count + 16;
        const int64_t position = (slot[b] * Hkv + kv) * length + t0;  // of the task's first key and value
        const uint16_t* keys = kc + position * hd;
        const uint16_t* values = vc + position * hd;
        const bool whole = parts[b] == 1;
        probs.resize(group * stride), weights.resize(group);
        for (int64_t g = 0; g < group; ++g) {
          const float* query = qkv + b * qkv_width + (kv * group + g) * hd;
          float* p = probs.data() + g * stride;
          if (int8 && hd == 64) key_scores_int8<64>(query, scale, kc8 + position * hd, ks + position, count, p);
          else if (int8 && hd == 128) key_scores_int8<128>(query, scale, kc8 + position * hd, ks + position, count, p);
          else if (hd == 64) key_scores<64>(query, scale, keys, count, p);
          else if (hd == 128) key_scores<128>(query, scale, keys, count, p);
          else for (int64_t t = 0; t < count; ++t) p[t] = dot_bf16(query, keys + t * hd, hd) * scale;
          const float total = softmax_numerators(p, count, &part_max[task * group + g]);
          part_sum[task * group + g] = total;
          weights[g] = whole ? 1.f / total : 1.f;  // a part stays unnormalized until the merge
        }
        float* o = whole ? out + (b * H + kv * group) * hd : &part_out[task * group * hd];  // heads adjacent
        auto weigh = [&](const auto& rows) { weighted_values(probs.data(), stride, weights.data(), group, rows, count, o); };
        const int8_t* value_codes = vc8 + position * hd;
#ifdef CHATCORE_AVX2
        if (span > 0) {
          const float* rows = widened.data() + (kv * span + t0) * hd;
          if (hd == 64) sum_widened<64>(probs.data(), stride, weights.data(), group, rows, count, o);
          else sum_widened<128>(probs.data(), stride, weights.data(), group, rows, count, o);
          continue;
        }
#endif
        if (int8 && hd == 64) weigh(Int8Values<64>{value_codes, vs + position});
        else if (int8 && hd == 128) weigh(Int8Values<128>{value_codes, vs + position});
        else if (hd == 64) weigh(Bf16Values<64>{values});
        else if (hd == 128) weigh(Bf16Values<128>{values});
        else
          for (int64_t g = 0; g < group; ++g) {
            std::fill(o + g * hd, o + (g + 1) * hd, 0.f);
            for (int64_t t = 0; t < count; ++t) axpy_bf16(probs[g * stride + t] * weights[g], values + t * hd, o + g * hd, hd);
          }
      }
    });
    // Merge the parts: each part's sums are rescaled from its own maximum to the overall one.
    auto merge = [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        if (parts[b] == 1) continue;
        for (int64_t kv = 0; kv < Hkv; ++kv)
          for (int64_t g = 0; g < group; ++g) {
            const int64_t base = first[b] + kv * parts[b];
            float top = -INFINITY, total = 0.f;
            for (int64_t part = 0; part < parts[b]; ++part) top = std::max(top, part_max[(base + part) * group + g]);
            float* o = out + (b * H + kv * group + g) * hd;
            std::fill(o, o + hd, 0.f);
            for (int64_t part = 0; part < parts[b]; ++part) {
              const int64_t at = (base + part) * group + g;
              const float factor = std::exp(part_max[at] - top);
              total += factor * part_sum[at];
              for (int64_t i = 0; i < hd; ++i) o[i] += factor * part_out[at * hd + i];
            }
            for (int64_t i = 0; i < hd; ++i) o[i] /= total;
          }
      }
    };
    if (tasks == B * Hkv) return;  // no row was cut
    if (B == 1) merge(0, 1);  // one row's merge is shorter than starting a parallel region
    else pool().run(B, 1, merge);
  }

  at::Tensor embed_, cos_, sin_;
  std::vector<float> final_norm_;
  QLinear head_;
  std::vector<Layer> layers_;
  int64_t dim_ = 0, n_heads_, n_kv_, head_dim_, intermediate_;
  float eps_;
};

// Head vectors float32 [N, D] -> their int8 cache form: codes uint8 [N, D] (with offset 128: keys as
// uint8 k + 128; with 0: values, int8 bits) and scales float32 [N], as the step writes them. Torch's
// prefill writes the cache for prompts too long for the step with its own ops; the tests hold those to
// this, byte for byte.
std::tuple<at::Tensor, at::Tensor> quantize_heads(const at::Tensor& input, int64_t offset) {
  TORCH_CHECK(input.dim() == 2 && input.size(1) % 16 == 0 && (offset == 0 || offset == 128),
              "heads must be [N, head_dim] with head_dim a multiple of 16; offset 0 or 128");
  const at::Tensor x = input.to(at::kFloat).contiguous();
  const int64_t N = x.size(0), D = x.size(1);
  at::Tensor codes = at::empty({N, D}, at::kByte), scales = at::empty({N}, at::kFloat);
  const float* src = x.data_ptr<float>();
  uint8_t* dst = codes.data_ptr<uint8_t>();
  float* scale = scales.data_ptr<float>();
  pool().run(N, std::max<int64_t>(1, N / (4 * at::get_num_threads())), [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) scale[n] = quantize_head(src + n * D, D, dst + n * D, uint8_t(offset));
  });
  return {codes, scales};
}

// The index of each row's largest value (the first of equals), float32 [R, V] -> int64 [R]: greedy
// decoding's pick, without waking torch's thread team from the decoder thread.
at::Tensor argmax_rows(const at::Tensor& input) {
  TORCH_CHECK(input.dim() == 2 && input.size(1) > 0, "logits must be [rows, vocab]");
  const at::Tensor logits = input.to(at::kFloat).contiguous();
  const int64_t R = logits.size(0), V = logits.size(1);
  at::Tensor out = at::empty({R}, at::kLong);
  const float* data = logits.data_ptr<float>();
  int64_t* best = out.data_ptr<int64_t>();
  pool().run(R, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* row = data + r * V;
      __m512 top = _mm512_set1_ps(-INFINITY);
      int64_t i = 0;
      for (; i + 16 <= V; i += 16) top = _mm512_max_ps(top, _mm512_loadu_ps(row + i));
      float m = _mm512_reduce_max_ps(top);
      for (; i < V; ++i) m = std::max(m, row[i]);
      int64_t at = 0;
      while (at < V && !(row[at] == m)) ++at;  // NaN rows (m is NaN) end at V: report 0
      best[r] = at < V ? at : 0;
    }
  });
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  namespace py = pybind11;
  m.doc() = "ChatCore's AVX-512 VNNI decode kernels";
  py::class_<QLinear>(m, "QLinear")
      .def(py::init<int, at::Tensor, at::Tensor, int64_t, int64_t>(), py::arg("bits"), py::arg("weight"),
           py::arg("scales"), py::arg("out_features"), py::arg("in_features"))
      .def_readonly("bits", &QLinear::bits)
      .def_readonly("in_features", &QLinear::in_features)
      .def_readonly("out_features", &QLinear::out_features)
      .def("forward", &QLinear::forward, py::call_guard<py::gil_scoped_release>());
  m.def("argmax", &argmax_rows, py::arg("logits"), py::call_guard<py::gil_scoped_release>());
  m.def("quantize_heads", &quantize_heads, py::arg("heads"), py::arg("offset"), py::call_guard<py::gil_scoped_release>());
  py::class_<Decoder>(m, "Decoder")
      .def(py::init<at::Tensor, at::Tensor, QLinear, at::Tensor, at::Tensor, int64_t, int64_t, int64_t, int64_t, double>())
      .def("add_layer", &Decoder::add_layer, py::arg("attn_norm"), py::arg("mlp_norm"), py::arg("wqkv"),
           py::arg("wo"), py::arg("w13"), py::arg("w2"), py::arg("k_cache"), py::arg("v_cache"),
           py::arg("k_scale") = py::none(), py::arg("v_scale") = py::none())
      .def("forward", &Decoder::forward, py::arg("tokens"), py::arg("slots"), py::arg("positions"),
           py::arg("logit_rows"), py::call_guard<py::gil_scoped_release>())
      .def("decode", &Decoder::decode, py::arg("tokens"), py::arg("positions"), py::arg("slots") = py::none(),
           py::call_guard<py::gil_scoped_release>());
}
