/* A minimal assertion harness for the SDK's unit tests (ctest runs each binary). */
#ifndef LHTTP_TEST_CHECK_H
#define LHTTP_TEST_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_failures = 0;
static int check_count = 0;

#define CHECK(cond)                                                          \
    do {                                                                     \
        check_count++;                                                       \
        if (!(cond)) {                                                       \
            check_failures++;                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                  \
        }                                                                    \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                   \
    do {                                                                     \
        long long check_a_ = (long long)(a), check_b_ = (long long)(b);      \
        check_count++;                                                       \
        if (check_a_ != check_b_) {                                          \
            check_failures++;                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld != %lld)\n",\
                    __FILE__, __LINE__, #a, #b, check_a_, check_b_);         \
        }                                                                    \
    } while (0)

/* A slice equals a NUL-terminated string, byte for byte. */
#define CHECK_STR(slice, cstr)                                               \
    do {                                                                     \
        lhttp_str check_s_ = (slice);                                        \
        const char *check_c_ = (cstr);                                       \
        check_count++;                                                       \
        if (check_s_.len != strlen(check_c_) ||                              \
            (check_s_.len && memcmp(check_s_.ptr, check_c_, check_s_.len))) {\
            check_failures++;                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s == \"%s\" (got \"%.*s\")\n", \
                    __FILE__, __LINE__, #slice, check_c_, (int)check_s_.len, \
                    check_s_.ptr ? check_s_.ptr : "");                       \
        }                                                                    \
    } while (0)

#define CHECK_DONE()                                                         \
    do {                                                                     \
        printf("%d checks, %d failed\n", check_count, check_failures);       \
        return check_failures ? 1 : 0;                                       \
    } while (0)

#endif
