/* The exponent range of doubles, 8 at a time, with AVX2 instructions: used by
 * the AVX2 kernels and by the AVX-512 ones (every AVX-512F CPU has AVX2).
 * Included inside a file compiled for one of those targets, after <immintrin.h>.
 *
 * 32-bit min/max on the high words: odd 32-bit lanes hold exponent<<20 (max)
 * and exponent<<20 - 1 as unsigned, so that a zero exponent is the largest
 * (min); even lanes are neutral. */
#ifndef MLT_XR_AVX2_H
#define MLT_XR_AVX2_H

#define XR_DECL                                                                \
    const __m256i xr_m1 = _mm256_set1_epi64x(0x7ff0000000000000LL);           \
    const __m256i xr_one = _mm256_set1_epi64x(0x0000000100000000LL);          \
    const __m256i xr_even = _mm256_set1_epi64x(0x00000000ffffffffLL);         \
    __m256i xr_max = _mm256_setzero_si256(), xr_min = _mm256_set1_epi32(-1);   \
    int64_t xr_smax = 0, xr_smin = 2047
#define XR_ONE4(p) do {                                                        \
        __m256i h_ = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(const void *)(p)), xr_m1); \
        xr_max = _mm256_max_epu32(xr_max, h_);                                 \
        xr_min = _mm256_min_epu32(xr_min, _mm256_or_si256(_mm256_sub_epi32(h_, xr_one), xr_even)); \
    } while (0)
#define XR_UPDATE8(p) do { XR_ONE4(p); XR_ONE4((p) + 4); } while (0)
#define XR_SCALAR(e) do {                                                      \
        int64_t e_ = (e);                                                      \
        xr_smax = e_ > xr_smax ? e_ : xr_smax;                                 \
        if (e_ && e_ < xr_smin) xr_smin = e_;                                  \
    } while (0)
#define XR_RESULT(emin, emax) do {                                             \
        uint32_t mx_[8], mn_[8];                                               \
        _mm256_storeu_si256((__m256i *)(void *)mx_, xr_max);                   \
        _mm256_storeu_si256((__m256i *)(void *)mn_, xr_min);                   \
        (emax) = xr_smax;                                                      \
        (emin) = xr_smin;                                                      \
        for (int k_ = 1; k_ < 8; k_ += 2) {                                    \
            int64_t a_ = (int64_t)(mx_[k_] >> 20);                             \
            int64_t b_ = mn_[k_] == 0xffffffffu ? 2047 : (int64_t)((mn_[k_] + 1) >> 20); \
            (emax) = a_ > (emax) ? a_ : (emax);                                \
            (emin) = b_ < (emin) ? b_ : (emin);                                \
        }                                                                      \
    } while (0)

#endif /* MLT_XR_AVX2_H */
