// The machine's ceilings that the decoder's kernels are measured against: `vpdpbusd` and 512-bit FMA
// instructions per second per core, on one and on two threads, and the read bandwidth of a 256 MB
// buffer (far larger than the caches) on two threads.
//
//     g++ -O2 -march=native -pthread bench/cpu_peak.cpp -o /tmp/cpu_peak && /tmp/cpu_peak
//
// Twelve independent accumulators hide the instructions' latency. They are pinned in registers by an
// empty asm statement: left to itself the compiler keeps them in memory, and the loop then measures
// store-to-load forwarding (~1.5 G/s here) instead of the multiply-add units (~6 G/s).

#include <immintrin.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

#define PIN(a, b, c, d, e, f, g, h, i, j, k, l) \
  __asm__ volatile("" : "+v"(a), "+v"(b), "+v"(c), "+v"(d), "+v"(e), "+v"(f), "+v"(g), "+v"(h), "+v"(i), "+v"(j), "+v"(k), "+v"(l))

// vpdpbusd instructions per second (billions) over n rounds of 12.
double vpdpbusd_rate(long n) {
  const __m512i x = _mm512_set1_epi32(0x01010101), w = _mm512_set1_epi32(0x02020202);
  __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a, e = a, f = a, g = a, h = a, i = a, j = a, k = a, l = a;
  const auto start = Clock::now();
  for (long r = 0; r < n; ++r) {
#define DP(v) v = _mm512_dpbusd_epi32(v, x, w);
    DP(a) DP(b) DP(c) DP(d) DP(e) DP(f) DP(g) DP(h) DP(i) DP(j) DP(k) DP(l)
    PIN(a, b, c, d, e, f, g, h, i, j, k, l);
  }
  const double rate = 12.0 * n / seconds_since(start) / 1e9;
  const __m512i sum = _mm512_add_epi32(_mm512_add_epi32(a, f), l);
  if (_mm512_reduce_add_epi32(sum) == 42) std::puts("");  // keeps the work observable
  return rate;
}

// 512-bit fused multiply-adds per second (billions) over n rounds of 12.
double fma_rate(long n) {
  const __m512 m = _mm512_set1_ps(1.0001f), s = _mm512_set1_ps(0.5f);
  __m512 a = _mm512_setzero_ps(), b = a, c = a, d = a, e = a, f = a, g = a, h = a, i = a, j = a, k = a, l = a;
  const auto start = Clock::now();
  for (long r = 0; r < n; ++r) {
#define FMA(v) v = _mm512_fmadd_ps(v, m, s);
    FMA(a) FMA(b) FMA(c) FMA(d) FMA(e) FMA(f) FMA(g) FMA(h) FMA(i) FMA(j) FMA(k) FMA(l)
    PIN(a, b, c, d, e, f, g, h, i, j, k, l);
  }
  const double rate = 12.0 * n / seconds_since(start) / 1e9;
  if (_mm512_reduce_add_ps(_mm512_add_ps(a, l)) == 42.f) std::puts("");
  return rate;
}

// Read GB/s of two threads, each streaming its half of `bytes` five times.
double read_bandwidth(size_t bytes) {
  auto* buffer = static_cast<uint8_t*>(std::aligned_alloc(64, bytes));
  std::memset(buffer, 1, bytes);
  double rates[2];
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t)
    threads.emplace_back([&, t] {
      const uint8_t* half = buffer + t * bytes / 2;
      __m512i acc = _mm512_setzero_si512();
      const auto start = Clock::now();
      for (int pass = 0; pass < 5; ++pass)
        for (size_t at = 0; at < bytes / 2; at += 64) acc = _mm512_add_epi32(acc, _mm512_load_si512(half + at));
      rates[t] = 5.0 * bytes / 2 / seconds_since(start) / 1e9;
      if (_mm512_reduce_add_epi32(acc) == 42) std::puts("");
    });
  for (auto& thread : threads) thread.join();
  std::free(buffer);
  return rates[0] + rates[1];
}

}  // namespace

int main() {
  const long rounds = 50'000'000;
  std::printf("one thread:  vpdpbusd %.2f G/s, fma %.2f G/s\n", vpdpbusd_rate(rounds), fma_rate(rounds));
  double rates[2];
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) threads.emplace_back([&, t] { rates[t] = vpdpbusd_rate(rounds); });
  for (auto& thread : threads) thread.join();
  std::printf("two threads: vpdpbusd %.2f + %.2f G/s\n", rates[0], rates[1]);
  std::printf("read bandwidth, two threads over 256 MB: %.1f GB/s\n", read_bandwidth(size_t(256) << 20));
  return 0;
}
