/* The C tests' checks: EXPECT(cond, printf-args) counts a check and reports
 * a failure with its place; expect_summary() prints "N passed, M failed"
 * and gives the exit status. */
#ifndef RKTLS_TEST_EXPECT_H
#define RKTLS_TEST_EXPECT_H

#include <stdio.h>

static int failures, checks;

#define EXPECT(cond, ...)                                                                          \
    do {                                                                                           \
        checks++;                                                                                  \
        if (!(cond)) {                                                                             \
            failures++;                                                                            \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
        }                                                                                          \
    } while (0)

static inline int expect_summary(void)
{
    printf("%d passed, %d failed\n", checks - failures, failures);
    return failures != 0;
}

#endif
