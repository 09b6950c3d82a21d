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

void observe(__m512i v) {  // keeps the work observable, so the compiler cannot drop it
  if (_mm512_reduce_add_epi32(v) == 42) std::puts("");
}
void observe(__m512 v) {
  if (_mm512_reduce_add_ps(v) == 42.f) std::puts("");
}

// Instructions per second (billions) of `step` (acc -> acc), over n rounds of 12 independent chains.
template <class Vector, class Step>
double rate(long n, Vector zero, Step step) {
  Vector a = zero, b = a, c = a, d = a, e = a, f = a, g = a, h = a, i = a, j = a, k = a, l = a;
  const auto start = Clock::now();
  for (long r = 0; r < n; ++r) {
    a = step(a), b = step(b), c = step(c), d = step(d), e = step(e), f = step(f);
    g = step(g), h = step(h), i = step(i), j = step(j), k = step(k), l = step(l);
    PIN(a, b, c, d, e, f, g, h, i, j, k, l);
  }
  const double per_second = 12.0 * n / seconds_since(start) / 1e9;
  observe(a), observe(l);
  return per_second;
}

double vpdpbusd_rate(long n) {
  const __m512i x = _mm512_set1_epi32(0x01010101), w = _mm512_set1_epi32(0x02020202);
  return rate(n, _mm512_setzero_si512(), [&](__m512i acc) { return _mm512_dpbusd_epi32(acc, x, w); });
}

double fma_rate(long n) {
  const __m512 m = _mm512_set1_ps(1.0001f), s = _mm512_set1_ps(0.5f);
  return rate(n, _mm512_setzero_ps(), [&](__m512 acc) { return _mm512_fmadd_ps(acc, m, s); });
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
      observe(acc);
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
