/* The even-sum kernel in SIMD: AVX-512 (with VBMI, VBMI2 and VNNI, or without) and AVX2
 * paths, chosen at run time.
 *
 * Each path is one function compiled with __attribute__((target(...))), so one build runs
 * on any x86-64 CPU: supported() asks the CPU (cpuid) and the OS (xgetbv: does it save
 * the vector registers?) which paths run here, and compute/kernel.py picks one. On other
 * CPUs this module builds with no path and the numba kernel runs.
 *
 * scan_<path>(buf, pos, stop, state, longs) is compute/numba_kernel.py's scan: the same
 * arguments, state layout, stops, errors and long numbers. It works on windows of 64
 * bytes; bitmasks of a window (whitespace, digits, signs) validate its tokens and find
 * their digits, signs and last digits. No token is then parsed on its own: each digit of
 * an even-ending token (the others need counting, not summing) is added, with its token's
 * sign, by its exponent (its distance to its token's last digit):
 * - avx512 (any AVX-512 BW CPU): a window takes its whole tokens and the next starts at
 *   the token that runs on; each digit goes into a byte counter per exponent, one masked
 *   add per exponent; every 14 windows the counters (signed bytes, 9 at most a window) go
 *   into 64-bit sums, and the sum is sum(10**k * counter_k);
 * - avx512vnni and avx2: windows 64 bytes apart, a token cut at a window's end weighed in
 *   both; the exponents as a vector, 10**exponent looked up byte by byte (vpermb;
 *   vpshufb) and the digits weighed (vpdpbusd; vpmaddubsw): the same work for any number
 *   of digits. avx512vnni finds each digit's token end from the list of the window's
 *   boundaries (vpcompressb) and how many come before the digit (vpexpandb); avx2 by a
 *   running minimum over the window.
 * A window with anything else (an invalid byte, a number of over 18 digits, leading
 * zeros that make one) goes to the careful byte-by-byte path, the numba kernel's.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define HAVE_X86 1
#include <cpuid.h>
#include <immintrin.h>
#endif

/* The state layout of compute/numba_kernel.py. */
enum { SUM_LOW, SUM_HIGH, EVEN_COUNT, COUNT, LONG_COUNT, ERROR_AT, STATE_SIZE };
#define LOW_BITS 60
#define MAX_DIGITS 18 /* numbers with more significant digits go back to Python */
#define WINDOW 64
#define FLUSH_WINDOWS 14 /* a byte counter moves by 9 at most a window: 14 * 9 < 128 */

typedef __int128 i128;

typedef struct { /* what a scan has summed */
    i128 sum;
    int64_t evens, count;
} totals;

typedef struct {
    Py_ssize_t pos;           /* every token before it is summed */
    Py_ssize_t careful_until; /* the careful path takes the tokens up to here */
} stopped;

typedef stopped (*fast_windows)(const uint8_t *buf, Py_ssize_t pos, Py_ssize_t stop, Py_ssize_t size, totals *t);

static const uint64_t POW10[MAX_DIGITS] = {
    1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL, 1000000ULL, 10000000ULL, 100000000ULL,
    1000000000ULL, 10000000000ULL, 100000000000ULL, 1000000000000ULL, 10000000000000ULL,
    100000000000000ULL, 1000000000000000ULL, 10000000000000000ULL, 100000000000000000ULL,
};

static inline bool is_space(uint8_t byte) { return byte == 32 || (byte >= 9 && byte <= 13); }

/* --- the careful path: one token, byte by byte (as numba_kernel._careful_token) --- */

enum { NUMBER, LONG, INVALID };

static int careful_token(const uint8_t *buf, Py_ssize_t start, Py_ssize_t end, int64_t *magnitude, bool *negative) {
    *negative = buf[start] == '-';
    Py_ssize_t at = start + (buf[start] == '-' || buf[start] == '+');
    if (at == end) return INVALID;
    int64_t value = 0;
    int significant = 0;
    for (Py_ssize_t i = at; i < end; i++) {
        int digit = buf[i] - '0';
        if (digit < 0 || digit > 9) return INVALID;
        significant += significant > 0 || digit > 0;
        if (significant <= MAX_DIGITS) value = value * 10 + digit;
    }
    *magnitude = value;
    return significant > MAX_DIGITS ? LONG : NUMBER;
}

static Py_ssize_t next_space(const uint8_t *buf, Py_ssize_t pos, Py_ssize_t size) {
    while (pos < size && !is_space(buf[pos])) pos++;
    return pos;
}

/* The scan: fast windows, then tokens byte by byte where they stopped, and again. */
static Py_ssize_t scan(const uint8_t *buf, Py_ssize_t size, Py_ssize_t pos, Py_ssize_t stop, int64_t *state,
                       int64_t *longs, Py_ssize_t capacity, fast_windows fast) {
    if (stop > size) stop = size;
    totals t = {(i128)state[SUM_HIGH] * ((i128)1 << LOW_BITS) + state[SUM_LOW], state[EVEN_COUNT], state[COUNT]};
    state[LONG_COUNT] = 0;
    Py_ssize_t careful_until = pos;
    while (true) {
        if (pos >= careful_until) {
            stopped at = fast(buf, pos, stop, size, &t);
            pos = at.pos;
            careful_until = at.careful_until;
        }
        while (pos < stop && is_space(buf[pos])) pos++;
        if (pos >= stop) break;
        Py_ssize_t start = pos;
        pos = next_space(buf, start + 1, size);
        int64_t magnitude = 0;
        bool negative;
        int kind = careful_token(buf, start, pos, &magnitude, &negative);
        if (kind == NUMBER) {
            if (!(magnitude & 1)) t.sum += negative ? -magnitude : magnitude;
            t.evens += !(magnitude & 1);
            t.count++;
        } else if (kind == INVALID) {
            state[ERROR_AT] = start;
            break;
        } else {
            longs[2 * state[LONG_COUNT]] = start;
            longs[2 * state[LONG_COUNT] + 1] = pos;
            if (++state[LONG_COUNT] == capacity) break;
        }
    }
    state[SUM_LOW] = (int64_t)(t.sum & (((i128)1 << LOW_BITS) - 1));
    state[SUM_HIGH] = (int64_t)(t.sum >> LOW_BITS); /* floors, also for a negative sum */
    state[EVEN_COUNT] = t.evens;
    state[COUNT] = t.count;
    return pos;
}

#ifdef HAVE_X86

/* --- what both SIMD paths share: a window's plan, from its bitmasks --- */

/* The scalar helpers take the bit instructions of every SIMD path's CPU (and are inlined
 * into those paths): tzcnt, lzcnt and bzhi are defined for 0 and 64, so no branch. */
#define BITS __attribute__((target("bmi,bmi2,lzcnt,popcnt")))

typedef struct { /* bit i for byte i of a window */
    uint64_t space, digit, minus, sign, even;
} masks;

typedef struct {
    int length;         /* the window's whole tokens end before this: where the next window starts */
    uint64_t digits;    /* the digits of the window's tokens */
    uint64_t even_ends; /* the last digit of each even one */
    uint64_t negative;  /* the digits of the negative ones */
    int64_t tokens, evens;
} plan;

BITS static inline uint64_t below(int n) { return _bzhi_u64(~0ULL, (unsigned)n); } /* n >= 64: all */
BITS static inline int high_zeros(uint64_t x) { return (int)_lzcnt_u64(x); }         /* 64 for 0 */

/* Does a run of set bits reach 19 (a number of over 18 digits, or leading zeros)? */
static inline bool runs_past_18(uint64_t run) {
    run &= run >> 1; /* bits i..i+1 set */
    run &= run >> 2; /* i..i+3 */
    run &= run >> 4; /* i..i+7 */
    run &= run >> 8; /* i..i+15 */
    run &= run >> 3; /* i..i+18 */
    return run != 0;
}

/* Plan the window of 64 bytes at a token's start or whitespace (``m`` its masks; ``on``:
 * its last token runs on past it). A window takes its whole tokens and the next starts at
 * the token that runs on, so no token spans two windows. False when the window needs the
 * careful path. Branch-free but for that answer. */
BITS static inline bool plan_window(masks m, bool on, plan *out) {
    uint64_t words = ~m.space;
    bool cut = (words >> 63) & on;
    out->length = cut ? 64 - high_zeros(m.space) : 64; /* 0 when one token fills the window */
    uint64_t tokens = words & below(out->length);
    uint64_t starts = tokens & ((m.space << 1) | 1);
    bool bad = (out->length == 0) | ((tokens & ~m.digit & ~(starts & m.sign & (m.digit >> 1))) != 0);
    uint64_t digits = tokens & m.digit;
    bad |= runs_past_18(digits);
    uint64_t ends = digits & ~(digits >> 1);
    out->digits = digits;
    out->even_ends = ends & m.even;
    out->negative = ((digits + (digits & (m.minus << 1))) ^ digits) & digits; /* a carry fills each run from its start */
    out->tokens = __builtin_popcountll(ends);
    out->evens = __builtin_popcountll(out->even_ends);
    return !bad;
}

/* Can the window at ``w`` be taken whole: its tokens start before ``stop``, and the byte
 * after it (does its last token run on?) is in the buffer. */
static inline bool whole_window(Py_ssize_t w, Py_ssize_t stop, Py_ssize_t size) {
    return w + WINDOW <= stop && w + WINDOW < size;
}

static inline bool over_10_digits(uint64_t run) {
    run &= run >> 1; /* bits i..i+1 set */
    run &= run >> 2; /* i..i+3 */
    run &= run >> 4; /* i..i+7 */
    run &= run >> 3; /* i..i+10 */
    return run != 0;
}

/* --- windows at fixed places: a token cut at a window's end goes on in the next ---
 *
 * avx512vnni and avx2 take windows 64 bytes apart, each classified once and planned with
 * the next one's masks in hand: where the next window starts never waits on this one's
 * plan (the wait that whole-token windows have: a load behind a chain of scalar steps).
 * A token cut at a window's end is weighed where its bytes are: its digits in this window
 * by their distance to its end in the next (``past``), the rest in the next window; its
 * sign is carried, and it is counted where it ends. */

typedef struct { /* what a window hands the next */
    bool space;     /* its last byte is whitespace (or the scan starts at the next) */
    bool negative;  /* its last token, cut, is negative */
} carry;

typedef struct {
    uint64_t digits;   /* every digit of the window: its tokens are valid */
    uint64_t negative; /* the digits of negative tokens */
    int past;          /* where the window's cut token ends (its last digit + 1), from the window's start */
    bool over_10;      /* a number of over 10 digits has digits here */
    int64_t tokens, evens; /* the tokens that end here, and the even ones */
} cut_plan;

/* Plan the window with masks ``m``, the next window's masks ``next`` and what the last
 * window handed on; hand on to the next. False when the window needs the careful path. */
BITS static inline bool plan_cut_window(masks m, masks next, carry *handed, cut_plan *out) {
    uint64_t words = ~m.space;
    uint64_t starts = words & ((m.space << 1) | handed->space);
    int next_digits = (int)_tzcnt_u64(~next.digit); /* the cut token's digits in the next window */
    int next_word = (int)_tzcnt_u64(next.space);    /* and all its bytes there */
    uint64_t digit_after = (m.digit >> 1) | (next.digit << 63);
    bool bad = (words & ~m.digit & ~(starts & m.sign & digit_after)) != 0; /* only digits, and a sign before one */
    bad |= (words >> 63) & ((next_word != next_digits) | (next_word == WINDOW)); /* the cut token goes on in digits */
    int cut_digits = (int)(words >> 63) * (high_zeros(~m.digit) + next_digits); /* a cut sign's too */
    bad |= runs_past_18(m.digit) | (cut_digits > MAX_DIGITS);
    uint64_t ends = m.digit & ~digit_after;
    unsigned long long filled; /* a carry fills each negative run from its start, and out of the window */
    unsigned char out_negative = _addcarry_u64(0, m.digit, m.digit & ((m.minus << 1) | handed->negative), &filled);
    out->digits = m.digit;
    out->negative = (filled ^ m.digit) & m.digit;
    out->past = WINDOW + next_digits;
    out->over_10 = over_10_digits(m.digit) | (cut_digits > 10);
    out->tokens = __builtin_popcountll(ends);
    out->evens = __builtin_popcountll(ends & m.even);
    handed->space = m.space >> 63;
    handed->negative = out_negative | (m.minus >> 63);
    return !bad;
}

/* Can the window at ``w`` be planned: its tokens start before ``stop``, and the next
 * window (where its cut token ends) is in the buffer. */
static inline bool fixed_window(Py_ssize_t w, Py_ssize_t stop, Py_ssize_t size) {
    return w + WINDOW <= stop && w + 2 * WINDOW <= size;
}

/* The fast windows stopped at ``w``, the last one's cut token (``handed``) going on into
 * it: add that token's last digits (the digits at ``w``), count it, and say where the
 * scan goes on (and, after a ``bad`` window, where the careful path hands back). The
 * first window at ``pos`` has no token before it. */
static inline stopped finish_cut_token(const uint8_t *buf, Py_ssize_t pos, Py_ssize_t w, bool bad, carry handed,
                                       int64_t *count, int64_t *evens, totals *t) {
    Py_ssize_t end = w;
    if (w > pos && !handed.space) {
        int64_t value = 0;
        while (buf[end] >= '0' && buf[end] <= '9') value = value * 10 + (buf[end++] - '0');
        if (end > w) { /* else the token ended with the last window */
            bool even = !(buf[end - 1] & 1);
            *count += 1;
            *evens += even;
            if (even) t->sum += handed.negative ? -value : value;
        }
    }
    return (stopped){end, bad ? w + WINDOW : end};
}

/* sum(10**k * (counts[k] - bias)) */
static inline i128 weigh(const int64_t *counts, int64_t bias) {
    i128 sum = 0;
    for (int k = 0; k < MAX_DIGITS; k++) sum += (i128)POW10[k] * (counts[k] - bias);
    return sum;
}

/* The avx512 path adds a window's digits by exponent: the digits of even tokens at
 * exponent k are the last digits, shifted k bytes towards the tokens' starts and kept on
 * digits. Two chains (k even, k odd), each a shift and an AND a step, so that one does
 * not wait on the other; 5 steps, or all 9 where a token has over 10 digits (a branch
 * that follows the file's shape, not each window's). ADD_AT(k, where): add the window's
 * signed digits at ``where`` to counter k. */
#define ADD_BY_EXPONENT(p)                                             \
    do {                                                               \
        uint64_t even = (p).even_ends, odd = (even >> 1) & (p).digits; \
        uint64_t pairs = (p).digits & ((p).digits >> 1);               \
        FIRST_PAIRS(ADD_PAIR)                                          \
        if (over_10_digits((p).digits)) {                              \
            LAST_PAIRS(ADD_PAIR)                                       \
        }                                                              \
    } while (0)
#define ADD_PAIR(k, k1)         \
    ADD_AT(k, even);            \
    ADD_AT(k1, odd);            \
    even = (even >> 2) & pairs; \
    odd = (odd >> 2) & pairs;
#define FIRST_PAIRS(X) X(0, 1) X(2, 3) X(4, 5) X(6, 7) X(8, 9)
#define LAST_PAIRS(X) X(10, 11) X(12, 13) X(14, 15) X(16, 17)
#define EACH_EXPONENT(X) \
    X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15) X(16) X(17)

/* --- AVX-512 --- */

#define AVX512 __attribute__((target("avx512f,avx512bw,bmi,bmi2,lzcnt,popcnt")))

AVX512 static inline masks classify512(__m512i v) {
    masks m;
    m.space = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(' ')) |
              _mm512_cmplt_epu8_mask(_mm512_sub_epi8(v, _mm512_set1_epi8(9)), _mm512_set1_epi8(5));
    m.digit = _mm512_cmplt_epu8_mask(_mm512_sub_epi8(v, _mm512_set1_epi8('0')), _mm512_set1_epi8(10));
    m.minus = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('-'));
    m.sign = m.minus | _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('+'));
    m.even = _mm512_testn_epi8_mask(v, _mm512_set1_epi8(1));
    return m;
}

AVX512 static inline __m512i byte_sums512(__m512i counter) { /* 8 int64 sums of the bytes + 128 */
    return _mm512_sad_epu8(_mm512_xor_si512(counter, _mm512_set1_epi8((char)0x80)), _mm512_setzero_si512());
}

AVX512 static stopped fast512(const uint8_t *buf, Py_ssize_t pos, Py_ssize_t stop, Py_ssize_t size, totals *t) {
    /* The byte counters by exponent, named (an array would live in memory), and their sums. */
#define DECLARE(k) __m512i counter##k = _mm512_setzero_si512(), wide##k = counter##k;
    EACH_EXPONENT(DECLARE)
#define ADD_AT(k, where) counter##k = _mm512_mask_add_epi8(counter##k, where, counter##k, digits)
#define FLUSH512(k) wide##k = _mm512_add_epi64(wide##k, byte_sums512(counter##k)), counter##k = _mm512_setzero_si512();
    int64_t flushes = 0, count = 0, evens = 0; /* here, not in ``t``: a byte pointer may alias it */
    Py_ssize_t w = pos, careful_until = pos;
    for (int since_flush = 1; whole_window(w, stop, size); since_flush++) {
        plan p;
        if (!plan_window(classify512(_mm512_loadu_si512(buf + w)), !is_space(buf[w + WINDOW]), &p)) {
            careful_until = w + WINDOW;
            break;
        }
        count += p.tokens;
        evens += p.evens;
        __m512i digits = _mm512_maskz_sub_epi8(p.digits, _mm512_loadu_si512(buf + w), _mm512_set1_epi8('0'));
        digits = _mm512_mask_sub_epi8(digits, p.negative, _mm512_setzero_si512(), digits);
        ADD_BY_EXPONENT(p);
        if (since_flush == FLUSH_WINDOWS) {
            EACH_EXPONENT(FLUSH512)
            flushes++;
            since_flush = 0;
        }
        w += p.length;
    }
    EACH_EXPONENT(FLUSH512)
#define REDUCE512(k) _mm512_reduce_add_epi64(wide##k),
    int64_t counts[MAX_DIGITS] = {EACH_EXPONENT(REDUCE512)};
#undef ADD_AT
    t->sum += weigh(counts, (flushes + 1) * WINDOW * 128);
    t->count += count;
    t->evens += evens;
    return (stopped){w, careful_until > w ? careful_until : w};
}

/* --- AVX-512 with VBMI, VBMI2 and VNNI: every digit's weight at once --- */

/* Rather than one step per exponent, each digit's exponent is computed as a byte (how far
 * its token's last digit is), and 10**exponent is looked up (vpermb) byte by byte of its
 * 8, each weighing the digits with vpdpbusd into 32-bit sums: the same work for 1 digit
 * or 10 (or, with the 4 high bytes too, 18). */
#define AVX512VNNI __attribute__((target("avx512f,avx512bw,avx512vbmi,avx512vbmi2,avx512vnni,bmi,bmi2,lzcnt,popcnt")))
#define WEIGHT_BYTES 8 /* 10**17 < 2**64 */
#define SUM_WINDOWS 4096 /* a 32-bit sum grows by 4 * 255 * 9 at most a window; 16 of them, 4096 windows: < 2**31 */

/* WEIGHTS[j][e]: byte j of 10**e (e < 18), filled at import. */
static uint8_t WEIGHTS[WEIGHT_BYTES][WINDOW] __attribute__((aligned(64)));

static void fill_weights(void) {
    for (int e = 0; e < MAX_DIGITS; e++)
        for (int j = 0; j < WEIGHT_BYTES; j++) WEIGHTS[j][e] = (uint8_t)(POW10[e] >> (8 * j));
}

AVX512VNNI static stopped fast512vnni(const uint8_t *buf, Py_ssize_t pos, Py_ssize_t stop, Py_ssize_t size,
                                      totals *t) {
    __m512i weights[WEIGHT_BYTES], sums[WEIGHT_BYTES];
    for (int j = 0; j < WEIGHT_BYTES; j++) {
        weights[j] = _mm512_load_si512(WEIGHTS[j]);
        sums[j] = _mm512_setzero_si512();
    }
    const __m512i index = _mm512_set_epi8(63, 62, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45,
                                          44, 43, 42, 41, 40, 39, 38, 37, 36, 35, 34, 33, 32, 31, 30, 29, 28, 27, 26,
                                          25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6,
                                          5, 4, 3, 2, 1, 0);
    const __m512i one = _mm512_set1_epi8(1);
    int64_t weighed[WEIGHT_BYTES] = {0}, count = 0, evens = 0;
    carry handed = {true, false};
    bool bad = false;
    Py_ssize_t w = pos;
    masks m = {0};
    __m512i v = _mm512_setzero_si512();
    if (fixed_window(w, stop, size)) {
        v = _mm512_loadu_si512(buf + w);
        m = classify512(v);
    }
    for (int since_sum = 1; fixed_window(w, stop, size); since_sum++) {
        __m512i v_next = _mm512_loadu_si512(buf + w + WINDOW);
        masks next = classify512(v_next);
        cut_plan p;
        carry on = handed;
        if (!plan_cut_window(m, next, &on, &p)) {
            bad = true;
            break;
        }
        count += p.tokens;
        evens += p.evens;
        /* end[i]: the first byte at or after i that is no digit (``past``: in the next window);
         * no scan over the window: the list of its boundaries (compressed), each digit's
         * boundary found by how many come before it (its place less the digits before it) */
        __m512i boundaries = _mm512_mask_compress_epi8(_mm512_set1_epi8((char)p.past), ~p.digits, index);
        __m512i rank = _mm512_maskz_expand_epi8(p.digits, index); /* digits before it, at a digit */
        __m512i end = _mm512_permutexvar_epi8(_mm512_sub_epi8(index, rank), boundaries);
        __m512i last = _mm512_sub_epi8(end, one); /* where each digit's token ends (64 on: the next window) */
        uint64_t even = p.digits & _mm512_testn_epi8_mask(_mm512_permutex2var_epi8(v, last, v_next), one);
        __m512i exponent = _mm512_sub_epi8(last, index);
        __m512i digits = _mm512_maskz_sub_epi8(even, v, _mm512_set1_epi8('0'));
        digits = _mm512_mask_sub_epi8(digits, p.negative, _mm512_setzero_si512(), digits);
        for (int j = 0; j < WEIGHT_BYTES / 2; j++)
            sums[j] = _mm512_dpbusd_epi32(sums[j], _mm512_permutexvar_epi8(exponent, weights[j]), digits);
        /* 10**9 < 2**32: the high bytes weigh only numbers of over 10 digits (a branch that
         * follows the file's shape; 1.07x on one number a line, Zen 4) */
        if (p.over_10)
            for (int j = WEIGHT_BYTES / 2; j < WEIGHT_BYTES; j++)
                sums[j] = _mm512_dpbusd_epi32(sums[j], _mm512_permutexvar_epi8(exponent, weights[j]), digits);
        if (since_sum == SUM_WINDOWS) {
            for (int j = 0; j < WEIGHT_BYTES; j++) {
                weighed[j] += _mm512_reduce_add_epi32(sums[j]);
                sums[j] = _mm512_setzero_si512();
            }
            since_sum = 0;
        }
        handed = on;
        w += WINDOW;
        v = v_next;
        m = next;
    }
    stopped at = finish_cut_token(buf, pos, w, bad, handed, &count, &evens, t);
    i128 sum = 0;
    for (int j = WEIGHT_BYTES - 1; j >= 0; j--) sum = sum * 256 + weighed[j] + _mm512_reduce_add_epi32(sums[j]);
    t->sum += sum;
    t->count += count;
    t->evens += evens;
    return at;
}

/* --- AVX2: each digit's weight at once, a window as two 32-byte halves --- */

/* As avx512vnni, with what AVX2 has: the exponents from a running minimum of keys (a
 * boundary's position and its last digit's parity: 2 * position + odd), 10**exponent
 * byte by byte from two 16-entry vpshufb tables, the digits weighed by vpmaddubsw. */
#define AVX2 __attribute__((target("avx2,bmi,bmi2,lzcnt,popcnt")))

typedef struct {
    __m256i low, high;
} pair;

AVX2 static inline uint64_t bits2(__m256i low, __m256i high) {
    return (uint32_t)_mm256_movemask_epi8(low) | (uint64_t)(uint32_t)_mm256_movemask_epi8(high) << 32;
}

AVX2 static inline __m256i below_or_equal(__m256i v, int limit) { /* unsigned v <= limit, per byte */
    return _mm256_cmpeq_epi8(_mm256_min_epu8(v, _mm256_set1_epi8((char)limit)), v);
}

AVX2 static inline masks classify2(const uint8_t *at) {
    masks m;
    __m256i half[2] = {_mm256_loadu_si256((const __m256i *)at), _mm256_loadu_si256((const __m256i *)(at + 32))};
    __m256i space[2], digit[2], minus[2], sign[2], even[2];
    for (int h = 0; h < 2; h++) {
        __m256i v = half[h];
        space[h] = _mm256_or_si256(_mm256_cmpeq_epi8(v, _mm256_set1_epi8(' ')),
                                   below_or_equal(_mm256_sub_epi8(v, _mm256_set1_epi8(9)), 4));
        digit[h] = below_or_equal(_mm256_sub_epi8(v, _mm256_set1_epi8('0')), 9);
        minus[h] = _mm256_cmpeq_epi8(v, _mm256_set1_epi8('-'));
        sign[h] = _mm256_or_si256(minus[h], _mm256_cmpeq_epi8(v, _mm256_set1_epi8('+')));
        even[h] = _mm256_cmpeq_epi8(_mm256_and_si256(v, _mm256_set1_epi8(1)), _mm256_setzero_si256());
    }
    m.space = bits2(space[0], space[1]);
    m.digit = bits2(digit[0], digit[1]);
    m.minus = bits2(minus[0], minus[1]);
    m.sign = bits2(sign[0], sign[1]);
    m.even = bits2(even[0], even[1]);
    return m;
}

/* 0xFF in the bytes whose bit is set in ``bits``. */
AVX2 static inline __m256i expand32(uint32_t bits) {
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3,
                                            3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), spread);
    return _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
}

/* x's bytes from ``s`` on (0 < s <= 16), then ``after``'s: byte i is x[i + s]. */
#define NEXT_BYTES(x, after, s) _mm256_alignr_epi8(_mm256_permute2x128_si256(x, after, 0x21), x, s)

AVX2 static inline int64_t reduce2(__m256i sums) { /* the 8 int32 of ``sums``, added */
    __m128i half = _mm_add_epi32(_mm256_castsi256_si128(sums), _mm256_extracti128_si256(sums, 1));
    half = _mm_add_epi32(half, _mm_shuffle_epi32(half, 0x4E));
    return (int64_t)_mm_cvtsi128_si32(half) + _mm_extract_epi32(half, 1);
}

AVX2 static stopped fast2(const uint8_t *buf, Py_ssize_t pos, Py_ssize_t stop, Py_ssize_t size, totals *t) {
    const __m256i iota = _mm256_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
                                          21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31);
    const __m256i thirty_two = _mm256_set1_epi8(32), one = _mm256_set1_epi8(1), ascii0 = _mm256_set1_epi8('0');
    const __m256i ones = _mm256_set1_epi16(1);
    pair index = {iota, _mm256_add_epi8(iota, thirty_two)};
    __m256i low_weights[WEIGHT_BYTES], high_weights[WEIGHT_BYTES], sums[WEIGHT_BYTES];
    for (int j = 0; j < WEIGHT_BYTES; j++) {
        low_weights[j] = _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)WEIGHTS[j]));
        high_weights[j] = _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)(WEIGHTS[j] + 16)));
        sums[j] = _mm256_setzero_si256();
    }
    int64_t weighed[WEIGHT_BYTES] = {0}, count = 0, evens = 0;
    carry handed = {true, false};
    bool bad = false;
    Py_ssize_t w = pos;
    masks m = {0};
    if (fixed_window(w, stop, size)) m = classify2(buf + w);
    for (int since_sum = 1; fixed_window(w, stop, size); since_sum++) {
        masks next = classify2(buf + w + WINDOW);
        cut_plan p;
        carry on = handed;
        if (!plan_cut_window(m, next, &on, &p)) {
            bad = true;
            break;
        }
        count += p.tokens;
        evens += p.evens;
        pair v = {_mm256_loadu_si256((const __m256i *)(buf + w)), _mm256_loadu_si256((const __m256i *)(buf + w + 32))};
        pair digit = {below_or_equal(_mm256_sub_epi8(v.low, ascii0), 9), below_or_equal(_mm256_sub_epi8(v.high, ascii0), 9)};
        /* key[i] at a byte that ends a run of digits (at i - 1): 2 * i + (byte i - 1 is odd); 255 on digits */
        pair before = {_mm256_alignr_epi8(v.low, _mm256_permute2x128_si256(v.low, v.low, 0x08), 15),
                       _mm256_alignr_epi8(v.high, _mm256_permute2x128_si256(v.high, v.low, 0x03), 15)};
        pair key = {
            _mm256_blendv_epi8(_mm256_add_epi8(_mm256_add_epi8(index.low, index.low), _mm256_and_si256(before.low, one)),
                               _mm256_set1_epi8((char)255), digit.low),
            _mm256_blendv_epi8(_mm256_add_epi8(_mm256_add_epi8(index.high, index.high), _mm256_and_si256(before.high, one)),
                               _mm256_set1_epi8((char)255), digit.high)};
        const __m256i none = _mm256_set1_epi8((char)255);
#define MIN_WITH_NEXT(s)                                                                         \
        {                                                                                        \
            __m256i low = NEXT_BYTES(key.low, key.high, s), high = NEXT_BYTES(key.high, none, s); \
            key.low = _mm256_min_epu8(key.low, low);                                             \
            key.high = _mm256_min_epu8(key.high, high);                                          \
        }
        MIN_WITH_NEXT(1) MIN_WITH_NEXT(2) MIN_WITH_NEXT(4) MIN_WITH_NEXT(8) /* a boundary up to 15 bytes on */
        if (p.over_10) MIN_WITH_NEXT(16)
        /* the cut token's digits found no boundary: theirs is in the next window (put in
         * last, so that the scan does not wait on the scalar plan) */
        key.high = _mm256_min_epu8(key.high, _mm256_set1_epi8((char)(2 * p.past + (buf[w + p.past - 1] & 1))));
        __m256i negative_low = expand32((uint32_t)p.negative), negative_high = expand32(p.negative >> 32);
        __m256i digits[2], exponent[2], low_index[2], high_index[2];
        for (int h = 0; h < 2; h++) {
            __m256i k = h ? key.high : key.low, at = h ? index.high : index.low, n = h ? negative_high : negative_low;
            /* bit 7 (vpshufb's zero) where a digit is weighed 0: an odd token's digits; and
             * a byte that is no digit is its own boundary, exponent -1 */
            __m256i odd = _mm256_slli_epi16(_mm256_and_si256(k, one), 7);
            __m256i e = _mm256_sub_epi8(_mm256_and_si256(_mm256_srli_epi16(k, 1), _mm256_set1_epi8(0x7F)),
                                        _mm256_add_epi8(at, one));
            exponent[h] = _mm256_or_si256(e, odd);
            __m256i d = _mm256_sub_epi8(h ? v.high : v.low, ascii0);
            digits[h] = _mm256_sub_epi8(_mm256_xor_si256(d, n), n); /* (d ^ -1) + 1 = -d where negative */
            low_index[h] = _mm256_or_si256(exponent[h], _mm256_cmpgt_epi8(exponent[h], _mm256_set1_epi8(15)));
            high_index[h] = _mm256_or_si256(_mm256_sub_epi8(e, _mm256_set1_epi8(16)), odd); /* below 16: bit 7 */
        }
        /* Numbers of 10 digits at most: exponents below 10, one table, 4 weight bytes
         * (10**9 < 2**32); else 8 bytes from both tables (a branch that follows the
         * file's shape). */
        for (int j = 0; j < (p.over_10 ? WEIGHT_BYTES : WEIGHT_BYTES / 2); j++)
            for (int h = 0; h < 2; h++) {
                __m256i weight = p.over_10 ? _mm256_or_si256(_mm256_shuffle_epi8(low_weights[j], low_index[h]),
                                                             _mm256_shuffle_epi8(high_weights[j], high_index[h]))
                                           : _mm256_shuffle_epi8(low_weights[j], exponent[h]);
                sums[j] = _mm256_add_epi32(sums[j], _mm256_madd_epi16(_mm256_maddubs_epi16(weight, digits[h]), ones));
            }
        if (since_sum == SUM_WINDOWS) {
            for (int j = 0; j < WEIGHT_BYTES; j++) {
                weighed[j] += reduce2(sums[j]);
                sums[j] = _mm256_setzero_si256();
            }
            since_sum = 0;
        }
        handed = on;
        w += WINDOW;
        m = next;
    }
    stopped at = finish_cut_token(buf, pos, w, bad, handed, &count, &evens, t);
    i128 sum = 0;
    for (int j = WEIGHT_BYTES - 1; j >= 0; j--) sum = sum * 256 + weighed[j] + reduce2(sums[j]);
    t->sum += sum;
    t->count += count;
    t->evens += evens;
    return at;
}

/* --- which paths this CPU and OS run --- */

static bool os_saves(uint64_t state_bits) { /* XCR0: the OS saves these register states */
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE)) return false;
    uint32_t low, high;
    __asm__("xgetbv" : "=a"(low), "=d"(high) : "c"(0));
    return ((((uint64_t)high << 32) | low) & state_bits) == state_bits;
}

static bool cpu_has_avx2(void) {
    unsigned a, b, c, d, c1, a8, b8, c8, d8;
    if (!__get_cpuid(1, &a, &b, &c1, &d) || !(c1 & bit_POPCNT)) return false;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(b & bit_AVX2) || !(b & bit_BMI) || !(b & bit_BMI2)) return false;
    if (!__get_cpuid(0x80000001, &a8, &b8, &c8, &d8) || !(c8 & bit_LZCNT)) return false;
    return os_saves(0x6); /* SSE and AVX (YMM) state */
}

static bool cpu_has_avx512(void) {
    unsigned a, b, c, d;
    if (!cpu_has_avx2() || !__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    if (!(b & bit_AVX512F) || !(b & bit_AVX512BW)) return false;
    return os_saves(0xE6); /* and the opmask, ZMM0-15 upper halves, ZMM16-31 */
}

static bool cpu_has_avx512vnni(void) {
    unsigned a, b, c, d;
    return cpu_has_avx512() && __get_cpuid_count(7, 0, &a, &b, &c, &d) && (c & bit_AVX512VBMI) &&
           (c & bit_AVX512VBMI2) && (c & bit_AVX512VNNI);
}

#endif /* HAVE_X86 */

/* --- Python --- */

/* scan(buf, pos, stop, state, longs) through ``fast``, the GIL released. */
static PyObject *scan_through(fast_windows fast, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "scan(buf, pos, stop, state, longs) takes 5 arguments");
        return NULL;
    }
    Py_ssize_t pos = PyNumber_AsSsize_t(args[1], PyExc_OverflowError);
    Py_ssize_t stop = PyNumber_AsSsize_t(args[2], PyExc_OverflowError);
    if ((pos == -1 || stop == -1) && PyErr_Occurred()) return NULL;
    Py_buffer buf, state, longs;
    if (PyObject_GetBuffer(args[0], &buf, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    if (PyObject_GetBuffer(args[3], &state, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    if (PyObject_GetBuffer(args[4], &longs, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&buf);
        PyBuffer_Release(&state);
        return NULL;
    }
    PyObject *result = NULL;
    if (buf.itemsize != 1 || state.itemsize != 8 || longs.itemsize != 8) {
        PyErr_SetString(PyExc_TypeError, "scan takes a uint8 buffer and int64 state and longs");
    } else if (state.len < STATE_SIZE * 8 || longs.len < 16 || pos < 0) {
        PyErr_SetString(PyExc_ValueError, "scan: state too short, longs empty or pos negative");
    } else {
        Py_ssize_t end;
        Py_BEGIN_ALLOW_THREADS;
        end = scan(buf.buf, buf.len, pos, stop, state.buf, longs.buf, longs.len / 16, fast);
        Py_END_ALLOW_THREADS;
        result = PyLong_FromSsize_t(end);
    }
    PyBuffer_Release(&buf);
    PyBuffer_Release(&state);
    PyBuffer_Release(&longs);
    return result;
}

#ifdef HAVE_X86
static PyObject *scan_avx512vnni(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return scan_through(fast512vnni, args, nargs);
}

static PyObject *scan_avx512(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return scan_through(fast512, args, nargs);
}

static PyObject *scan_avx2(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return scan_through(fast2, args, nargs);
}
#endif

static PyObject *supported(PyObject *self, PyObject *unused) {
#ifdef HAVE_X86
    if (cpu_has_avx512vnni()) return Py_BuildValue("(sss)", "avx512vnni", "avx512", "avx2");
    if (cpu_has_avx512()) return Py_BuildValue("(ss)", "avx512", "avx2");
    if (cpu_has_avx2()) return Py_BuildValue("(s)", "avx2");
#endif
    return PyTuple_New(0);
}

static PyMethodDef methods[] = {
#ifdef HAVE_X86
    {"scan_avx512vnni", (PyCFunction)(void (*)(void))scan_avx512vnni, METH_FASTCALL,
     "compute.numba_kernel.scan with AVX-512 (F, BW, VBMI, VBMI2, VNNI); only where supported() names it."},
    {"scan_avx512", (PyCFunction)(void (*)(void))scan_avx512, METH_FASTCALL,
     "compute.numba_kernel.scan with AVX-512 (F, BW); only where supported() names it."},
    {"scan_avx2", (PyCFunction)(void (*)(void))scan_avx2, METH_FASTCALL,
     "compute.numba_kernel.scan with AVX2; only where supported() names it."},
#endif
    {"supported", supported, METH_NOARGS, "The SIMD paths this CPU and OS run, fastest first."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "compute._simd", .m_doc = "The even-sum kernel in SIMD.", .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__simd(void) {
#ifdef HAVE_X86
    fill_weights();
#endif
    return PyModule_Create(&module);
}
