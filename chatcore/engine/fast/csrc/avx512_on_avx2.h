// The AVX-512 intrinsics that native.cpp uses, for CPUs with AVX2 and FMA only (most AMD CPUs before
// Zen 4, Intel desktops and laptops without AVX-512). Included by native.cpp where the CPU lacks any
// AVX-512 extension the kernels use: each intrinsic's name becomes a macro for a function here that
// does the same on the two 256-bit halves of the 512-bit value. So the kernels keep one source, and
// this file only says how each instruction is done with half-width ones.
//
// The vector types (__m512, __m512i, __m512bh, __mmask16) are GCC's own: immintrin.h declares them on
// every x86 target, and GCC lowers a 64-byte value to two 32-byte registers.
//
// Two instructions have no AVX2 twin and are built from several:
// - vpdpbusd (u8 x s8, 4 products into each int32 lane): vpmaddubsw saturates its int16 pair sums, so
//   the unsigned bytes are split into their low 7 bits and their top bit, and each part summed exactly.
//   The 4-bit product, the step's largest cost, has its own AVX2 kernel in native.cpp (q4_tile).
// - vdpbf16ps (bfloat16 pairs into float32 lanes): each bfloat16 is widened to float32 by a shift,
//   and the two products added by FMAs in order (the AVX-512 instruction may round differently).
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#define CHATCORE_AVX2 1

namespace chatcore_avx2 {

union F {  // 16 floats
  __m512 v;
  __m256 h[2];
};
union I {  // 64 bytes of integers
  __m512i v;
  __m256i h[2];
};
union D {  // 8 doubles
  __m512d v;
  __m256d h[2];
};

inline __m512 join(__m256 lo, __m256 hi) {
  F r;
  r.h[0] = lo, r.h[1] = hi;
  return r.v;
}
inline __m512i join(__m256i lo, __m256i hi) {
  I r;
  r.h[0] = lo, r.h[1] = hi;
  return r.v;
}
inline __m256 lo(__m512 v) { F x; x.v = v; return x.h[0]; }
inline __m256 hi(__m512 v) { F x; x.v = v; return x.h[1]; }
inline __m256i lo(__m512i v) { I x; x.v = v; return x.h[0]; }
inline __m256i hi(__m512i v) { I x; x.v = v; return x.h[1]; }

#define CHATCORE_F2(name, op) \
  inline __m512 name(__m512 a, __m512 b) { return join(op(lo(a), lo(b)), op(hi(a), hi(b))); }
CHATCORE_F2(add_ps, _mm256_add_ps)
CHATCORE_F2(sub_ps, _mm256_sub_ps)
CHATCORE_F2(mul_ps, _mm256_mul_ps)
CHATCORE_F2(div_ps, _mm256_div_ps)
CHATCORE_F2(max_ps, _mm256_max_ps)
CHATCORE_F2(unpacklo_ps, _mm256_unpacklo_ps)  // both work within 128-bit lanes, as the 512-bit ones do
CHATCORE_F2(unpackhi_ps, _mm256_unpackhi_ps)
#undef CHATCORE_F2

inline __m512 fmadd_ps(__m512 a, __m512 b, __m512 c) {
  return join(_mm256_fmadd_ps(lo(a), lo(b), lo(c)), _mm256_fmadd_ps(hi(a), hi(b), hi(c)));
}
inline __m512 set1_ps(float x) { const __m256 v = _mm256_set1_ps(x); return join(v, v); }
inline __m512 setzero_ps() { return join(_mm256_setzero_ps(), _mm256_setzero_ps()); }
inline __m512 loadu_ps(const void* p) {
  const float* f = static_cast<const float*>(p);
  return join(_mm256_loadu_ps(f), _mm256_loadu_ps(f + 8));
}
inline void storeu_ps(void* p, __m512 v) {
  float* f = static_cast<float*>(p);
  _mm256_storeu_ps(f, lo(v)), _mm256_storeu_ps(f + 8, hi(v));
}
inline __m512 abs_ps(__m512 v) {
  const __m256 m = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  return join(_mm256_and_ps(lo(v), m), _mm256_and_ps(hi(v), m));
}

// Lanes 0..7 and 8..15 of a 16-bit mask as two vector masks (all ones where the bit is set).
inline void mask_halves(__mmask16 k, __m256i& m0, __m256i& m1) {
  const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  m0 = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(k & 0xff), bit), bit);
  m1 = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((k >> 8) & 0xff), bit), bit);
}
inline __m512 maskz_loadu_ps(__mmask16 k, const void* p) {
  const float* f = static_cast<const float*>(p);
  __m256i m0, m1;
  mask_halves(k, m0, m1);
  return join(_mm256_maskload_ps(f, m0), _mm256_maskload_ps(f + 8, m1));  // masked-off lanes: 0, never read
}
inline __m512 mask_loadu_ps(__m512 src, __mmask16 k, const void* p) {
  const float* f = static_cast<const float*>(p);
  __m256i m0, m1;
  mask_halves(k, m0, m1);
  return join(_mm256_blendv_ps(lo(src), _mm256_maskload_ps(f, m0), _mm256_castsi256_ps(m0)),
              _mm256_blendv_ps(hi(src), _mm256_maskload_ps(f + 8, m1), _mm256_castsi256_ps(m1)));
}
inline void mask_storeu_ps(void* p, __mmask16 k, __m512 v) {
  float* f = static_cast<float*>(p);
  __m256i m0, m1;
  mask_halves(k, m0, m1);
  _mm256_maskstore_ps(f, m0, lo(v)), _mm256_maskstore_ps(f + 8, m1, hi(v));
}

inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
inline float reduce_add_ps(__m512 v) { return hsum8(_mm256_add_ps(lo(v), hi(v))); }
inline float reduce_max_ps(__m512 v) {
  __m256 m = _mm256_max_ps(lo(v), hi(v));
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
}
inline int32_t reduce_add_epi32(__m512i v) {
  __m256i s8 = _mm256_add_epi32(lo(v), hi(v));
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(s8), _mm256_extracti128_si256(s8, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

inline __m512 cvtepi32_ps(__m512i v) { return join(_mm256_cvtepi32_ps(lo(v)), _mm256_cvtepi32_ps(hi(v))); }
inline __m512i cvtps_epi32(__m512 v) { return join(_mm256_cvtps_epi32(lo(v)), _mm256_cvtps_epi32(hi(v))); }
inline __m512 castsi512_ps(__m512i v) { return (__m512)v; }
inline __m512d castps_pd(__m512 v) { return (__m512d)v; }
inline __m512 castpd_ps(__m512d v) { return (__m512)v; }
inline __m512d unpacklo_pd(__m512d a, __m512d b) {
  D x, y, r;
  x.v = a, y.v = b;
  r.h[0] = _mm256_unpacklo_pd(x.h[0], y.h[0]), r.h[1] = _mm256_unpacklo_pd(x.h[1], y.h[1]);
  return r.v;
}
inline __m512d unpackhi_pd(__m512d a, __m512d b) {
  D x, y, r;
  x.v = a, y.v = b;
  r.h[0] = _mm256_unpackhi_pd(x.h[0], y.h[0]), r.h[1] = _mm256_unpackhi_pd(x.h[1], y.h[1]);
  return r.v;
}
// 128-bit lanes 0, 1 of the result from a (lanes imm[1:0], imm[3:2]), 2, 3 from b (imm[5:4], imm[7:6]).
template <int IMM>
inline __m512 shuffle_f32x4(__m512 a, __m512 b) {
  return join(_mm256_permute2f128_ps(lo(a), hi(a), (IMM & 3) | (((IMM >> 2) & 3) << 4)),
              _mm256_permute2f128_ps(lo(b), hi(b), ((IMM >> 4) & 3) | (((IMM >> 6) & 3) << 4)));
}
template <int IMM>
inline __m512 roundscale_ps(__m512 v) {
  return join(_mm256_round_ps(lo(v), IMM), _mm256_round_ps(hi(v), IMM));
}
// a * 2^n for whole numbers n (exp16's only use): n is clamped to [-127, 128], which gives 0 and
// infinity at the ends, as scalef's own underflow and overflow do for e^x.
inline __m512 scalef_ps(__m512 a, __m512 n) {
  auto half = [](__m256 a, __m256 n) {
    n = _mm256_min_ps(_mm256_max_ps(n, _mm256_set1_ps(-127.f)), _mm256_set1_ps(128.f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(a, _mm256_castsi256_ps(e));
  };
  return join(half(lo(a), lo(n)), half(hi(a), hi(n)));
}

inline __m512i loadu_si512(const void* p) {
  const __m256i* q = static_cast<const __m256i*>(p);
  return join(_mm256_loadu_si256(q), _mm256_loadu_si256(q + 1));
}
inline __m512i setzero_si512() { return join(_mm256_setzero_si256(), _mm256_setzero_si256()); }
inline __m512i set1_epi8(char x) { const __m256i v = _mm256_set1_epi8(x); return join(v, v); }
inline __m512i set1_epi32(int x) { const __m256i v = _mm256_set1_epi32(x); return join(v, v); }
inline __m512i and_si512(__m512i a, __m512i b) {
  return join(_mm256_and_si256(lo(a), lo(b)), _mm256_and_si256(hi(a), hi(b)));
}
inline __m512i add_epi32(__m512i a, __m512i b) {
  return join(_mm256_add_epi32(lo(a), lo(b)), _mm256_add_epi32(hi(a), hi(b)));
}
inline __m512i srli_epi16(__m512i v, int n) { return join(_mm256_srli_epi16(lo(v), n), _mm256_srli_epi16(hi(v), n)); }
inline __m512i slli_epi32(__m512i v, int n) { return join(_mm256_slli_epi32(lo(v), n), _mm256_slli_epi32(hi(v), n)); }
inline __m512i cvtepu16_epi32(__m256i v) {
  return join(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(v)), _mm256_cvtepu16_epi32(_mm256_extracti128_si256(v, 1)));
}
inline __m512i cvtepi8_epi32(__m128i v) {
  return join(_mm256_cvtepi8_epi32(v), _mm256_cvtepi8_epi32(_mm_srli_si128(v, 8)));
}
// 16 int32 to 16 int8, saturating, in order (the 256-bit packs interleave 128-bit lanes: put back).
inline __m128i cvtsepi32_epi8(__m512i v) {
  const __m256i words = _mm256_permute4x64_epi64(_mm256_packs_epi32(lo(v), hi(v)), 0xd8);
  return _mm_packs_epi16(_mm256_castsi256_si128(words), _mm256_extracti128_si256(words, 1));
}

// vpdpbusd on 8 lanes, exactly: a's bytes are unsigned (up to 255), b's signed.
inline __m256i dpbusd8(__m256i acc, __m256i a, __m256i b) {
  const __m256i low7 = _mm256_and_si256(a, _mm256_set1_epi8(0x7f));
  const __m256i top = _mm256_and_si256(_mm256_srli_epi16(a, 7), _mm256_set1_epi8(1));
  const __m256i low_sums = _mm256_madd_epi16(_mm256_maddubs_epi16(low7, b), _mm256_set1_epi16(1));
  const __m256i top_sums = _mm256_madd_epi16(_mm256_maddubs_epi16(top, b), _mm256_set1_epi16(128));
  return _mm256_add_epi32(acc, _mm256_add_epi32(low_sums, top_sums));
}
inline __m512i dpbusd_epi32(__m512i acc, __m512i a, __m512i b) {
  return join(dpbusd8(lo(acc), lo(a), lo(b)), dpbusd8(hi(acc), hi(a), hi(b)));
}

// bfloat16 pairs: element 2i is the low half of 32-bit lane i, element 2i + 1 the high half.
inline __m256 bf16_even(__m256i v) { return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)); }
inline __m256 bf16_odd(__m256i v) { return _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(int(0xffff0000u)))); }
inline __m512 dpbf16_ps(__m512 acc, __m512bh a, __m512bh b) {
  const __m512i x = (__m512i)a, y = (__m512i)b;
  auto half = [](__m256 acc, __m256i x, __m256i y) {
    return _mm256_fmadd_ps(bf16_odd(x), bf16_odd(y), _mm256_fmadd_ps(bf16_even(x), bf16_even(y), acc));
  };
  return join(half(lo(acc), lo(x), lo(y)), half(hi(acc), hi(x), hi(y)));
}
// Round 8 floats to bfloat16 (nearest even; as int32 lanes holding the 16 bits).
inline __m256i round_bf16(__m256 v) {
  const __m256i bits = _mm256_castps_si256(v);
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  return _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(bits, _mm256_set1_epi32(0x7fff)), odd), 16);
}
// Elements 0..15 from b, 16..31 from a, as the AVX-512 instruction orders them.
inline __m512bh cvtne2ps_pbh(__m512 a, __m512 b) {
  auto pack = [](__m512 v) {  // 16 floats -> 16 bfloat16 in order
    return _mm256_permute4x64_epi64(_mm256_packus_epi32(round_bf16(lo(v)), round_bf16(hi(v))), 0xd8);
  };
  return (__m512bh)join(pack(b), pack(a));
}

}  // namespace chatcore_avx2

// The names native.cpp uses, now meaning the functions above.
#define CHATCORE_USE(name) chatcore_avx2::name
#undef _mm512_add_ps
#define _mm512_add_ps CHATCORE_USE(add_ps)
#undef _mm512_sub_ps
#define _mm512_sub_ps CHATCORE_USE(sub_ps)
#undef _mm512_mul_ps
#define _mm512_mul_ps CHATCORE_USE(mul_ps)
#undef _mm512_div_ps
#define _mm512_div_ps CHATCORE_USE(div_ps)
#undef _mm512_max_ps
#define _mm512_max_ps CHATCORE_USE(max_ps)
#undef _mm512_unpacklo_ps
#define _mm512_unpacklo_ps CHATCORE_USE(unpacklo_ps)
#undef _mm512_unpackhi_ps
#define _mm512_unpackhi_ps CHATCORE_USE(unpackhi_ps)
#undef _mm512_fmadd_ps
#define _mm512_fmadd_ps CHATCORE_USE(fmadd_ps)
#undef _mm512_set1_ps
#define _mm512_set1_ps CHATCORE_USE(set1_ps)
#undef _mm512_setzero_ps
#define _mm512_setzero_ps CHATCORE_USE(setzero_ps)
#undef _mm512_loadu_ps
#define _mm512_loadu_ps CHATCORE_USE(loadu_ps)
#undef _mm512_load_ps
#define _mm512_load_ps CHATCORE_USE(loadu_ps)
#undef _mm512_storeu_ps
#define _mm512_storeu_ps CHATCORE_USE(storeu_ps)
#undef _mm512_store_ps
#define _mm512_store_ps CHATCORE_USE(storeu_ps)
#undef _mm512_abs_ps
#define _mm512_abs_ps CHATCORE_USE(abs_ps)
#undef _mm512_maskz_loadu_ps
#define _mm512_maskz_loadu_ps CHATCORE_USE(maskz_loadu_ps)
#undef _mm512_mask_loadu_ps
#define _mm512_mask_loadu_ps CHATCORE_USE(mask_loadu_ps)
#undef _mm512_mask_storeu_ps
#define _mm512_mask_storeu_ps CHATCORE_USE(mask_storeu_ps)
#undef _mm512_reduce_add_ps
#define _mm512_reduce_add_ps CHATCORE_USE(reduce_add_ps)
#undef _mm512_reduce_max_ps
#define _mm512_reduce_max_ps CHATCORE_USE(reduce_max_ps)
#undef _mm512_reduce_add_epi32
#define _mm512_reduce_add_epi32 CHATCORE_USE(reduce_add_epi32)
#undef _mm512_cvtepi32_ps
#define _mm512_cvtepi32_ps CHATCORE_USE(cvtepi32_ps)
#undef _mm512_cvtps_epi32
#define _mm512_cvtps_epi32 CHATCORE_USE(cvtps_epi32)
#undef _mm512_castsi512_ps
#define _mm512_castsi512_ps CHATCORE_USE(castsi512_ps)
#undef _mm512_castps_pd
#define _mm512_castps_pd CHATCORE_USE(castps_pd)
#undef _mm512_castpd_ps
#define _mm512_castpd_ps CHATCORE_USE(castpd_ps)
#undef _mm512_unpacklo_pd
#define _mm512_unpacklo_pd CHATCORE_USE(unpacklo_pd)
#undef _mm512_unpackhi_pd
#define _mm512_unpackhi_pd CHATCORE_USE(unpackhi_pd)
#undef _mm512_shuffle_f32x4
#define _mm512_shuffle_f32x4(a, b, imm) chatcore_avx2::shuffle_f32x4<(imm)>((a), (b))
#undef _mm512_roundscale_ps
#define _mm512_roundscale_ps(v, imm) chatcore_avx2::roundscale_ps<(imm)>((v))
#undef _mm512_scalef_ps
#define _mm512_scalef_ps CHATCORE_USE(scalef_ps)
#undef _mm512_loadu_si512
#define _mm512_loadu_si512 CHATCORE_USE(loadu_si512)
#undef _mm512_load_si512
#define _mm512_load_si512 CHATCORE_USE(loadu_si512)
#undef _mm512_setzero_si512
#define _mm512_setzero_si512 CHATCORE_USE(setzero_si512)
#undef _mm512_set1_epi8
#define _mm512_set1_epi8 CHATCORE_USE(set1_epi8)
#undef _mm512_set1_epi32
#define _mm512_set1_epi32 CHATCORE_USE(set1_epi32)
#undef _mm512_and_si512
#define _mm512_and_si512 CHATCORE_USE(and_si512)
#undef _mm512_add_epi32
#define _mm512_add_epi32 CHATCORE_USE(add_epi32)
#undef _mm512_srli_epi16
#define _mm512_srli_epi16 CHATCORE_USE(srli_epi16)
#undef _mm512_slli_epi32
#define _mm512_slli_epi32 CHATCORE_USE(slli_epi32)
#undef _mm512_cvtepu16_epi32
#define _mm512_cvtepu16_epi32 CHATCORE_USE(cvtepu16_epi32)
#undef _mm512_cvtepi8_epi32
#define _mm512_cvtepi8_epi32 CHATCORE_USE(cvtepi8_epi32)
#undef _mm512_cvtsepi32_epi8
#define _mm512_cvtsepi32_epi8 CHATCORE_USE(cvtsepi32_epi8)
#undef _mm512_dpbusd_epi32
#define _mm512_dpbusd_epi32 CHATCORE_USE(dpbusd_epi32)
#undef _mm512_dpbf16_ps
#define _mm512_dpbf16_ps CHATCORE_USE(dpbf16_ps)
#undef _mm512_cvtne2ps_pbh
#define _mm512_cvtne2ps_pbh CHATCORE_USE(cvtne2ps_pbh)
