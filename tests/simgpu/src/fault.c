/*
 * Simulated GPU: fault injection and split-k configuration, read once from the
 * environment. This is how the tests prove that a cheating or faulty GPU is
 * caught: with SIMGPU_FAULT set, GEMMs (cuBLAS and cuBLASLt alike) compute
 * wrong results in the documented ways (tests/simgpu/README.md); unset, they
 * compute honestly. Which calls are hit is decided from the GEMM call number,
 * counted at issue time, so a single-threaded program is hit reproducibly.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "simgpu.h"

static struct {
    int ok;
    int any;        /* any fault mode given */
    int zero;
    double perturb;
    double rows;
    double weights;
    int precision;  /* enum sg_precision */
    double keep_k;  /* truncate-k fraction; 1 when not given */
    double row_scale; /* row-scale:REL; 0 when not given */
    double prob;    /* 1 when not given */
    uint64_t after; /* 0 when not given */
    uint64_t seed;
    int splitk;
    uint64_t splitk_seed;
} F;

static pthread_once_t once = PTHREAD_ONCE_INIT;

/* splitmix64 of a combination of a and b: a cheap, well-mixed hash for
 * seeded decisions. */
uint64_t sg_hash(uint64_t a, uint64_t b) {
    uint64_t z = a ^ (b * 0xbf58476d1ce4e5b9ull + 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int parse_double(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

static int parse_u64(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    if (*s == '-')
        return -1;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s || *end)
        return -1;
    *out = v;
    return 0;
}

/* The precision: modes, by their argument. */
static const struct {
    const char *name;
    int precision;
} precisions[] = {
    {"fp8", SG_PREC_FP8},
    {"fp8-rowscaled", SG_PREC_FP8_ROWSCALED},
    {"int8-rowscaled", SG_PREC_INT8_ROWSCALED},
};

static int parse_precision(const char *arg) {
    for (size_t i = 0; i < sizeof precisions / sizeof precisions[0]; i++) {
        if (strcmp(arg, precisions[i].name))
            continue;
        if (F.precision && F.precision != precisions[i].precision) {
            fprintf(stderr, "simgpu: SIMGPU_FAULT: at most one precision: mode\n");
            return -1;
        }
        F.precision = precisions[i].precision;
        F.any = 1;
        return 0;
    }
    return -1;
}

/* Parses one SIMGPU_FAULT item (split at its ':'); returns 0 on success. */
static int parse_fields(char *item) {
    char *arg = strchr(item, ':');
    if (arg)
        *arg++ = '\0';
    if (!strcmp(item, "zero") && !arg) {
        F.zero = F.any = 1;
        return 0;
    }
    if (!arg)
        return -1;
    double v;
    if (!strcmp(item, "precision"))
        return parse_precision(arg);
    if (!strcmp(item, "after"))
        return parse_u64(arg, &F.after);
    if (parse_double(arg, &v))
        return -1;
    if (!strcmp(item, "perturb") && v != 0) {
        F.perturb = v;
    } else if (!strcmp(item, "rows") && v >= 0 && v < 1) {
        F.rows = v;
    } else if (!strcmp(item, "weights") && v != 0) {
        F.weights = v;
    } else if (!strcmp(item, "truncate-k") && v > 0 && v <= 1) {
        F.keep_k = v;
    } else if (!strcmp(item, "row-scale") && v != 0) {
        F.row_scale = v;
    } else if (!strcmp(item, "prob") && v >= 0 && v <= 1) {
        F.prob = v;
        return 0;
    } else {
        return -1;
    }
    F.any = 1;
    return 0;
}

/* Parses one SIMGPU_FAULT item; returns 0 on success. The item is left as
 * given, so that an error message can quote it whole. */
static int parse_item(char *item) {
    char *colon = strchr(item, ':');
    int r = parse_fields(item);
    if (colon)
        *colon = ':';
    return r;
}

static void load(void) {
    F.ok = 1;
    F.rows = 1;
    F.keep_k = 1;
    F.prob = 1;
    F.seed = 1;
    const char *seed = getenv("SIMGPU_FAULT_SEED");
    if (seed && *seed && parse_u64(seed, &F.seed)) {
        fprintf(stderr, "simgpu: SIMGPU_FAULT_SEED=%s is not an unsigned integer\n", seed);
        F.ok = 0;
    }
    const char *splitk = getenv("SIMGPU_SPLITK");
    if (splitk && *splitk) {
        if (parse_u64(splitk, &F.splitk_seed)) {
            fprintf(stderr, "simgpu: SIMGPU_SPLITK=%s is not an unsigned integer seed\n", splitk);
            F.ok = 0;
        }
        F.splitk = 1;
    }
    const char *spec = getenv("SIMGPU_FAULT");
    if (!spec || !*spec)
        return;
    char *copy = strdup(spec);
    if (!copy) {
        F.ok = 0;
        return;
    }
    char *save = NULL;
    for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        if (parse_item(item)) {
            fprintf(stderr, "simgpu: SIMGPU_FAULT=%s: cannot parse '%s' (see tests/simgpu/README.md)\n", spec, item);
            F.ok = 0;
        }
    }
    free(copy);
    if (F.ok && !F.any) {
        fprintf(stderr, "simgpu: SIMGPU_FAULT=%s names no fault mode, only modifiers\n", spec);
        F.ok = 0;
    }
    if (F.ok)
        fprintf(stderr, "simgpu: fault injection active: SIMGPU_FAULT=%s (seed %llu)\n", spec,
                (unsigned long long)F.seed);
}

SG_EXPORT int sg_fault_config_ok(void) {
    pthread_once(&once, load);
    return F.ok ? 0 : -1;
}

void sg_fault_plan_for(uint64_t call_index, sg_fault_plan *plan) {
    pthread_once(&once, load);
    memset(plan, 0, sizeof *plan);
    plan->rows = 1;
    plan->keep_k = 1;
    if (!F.ok || !F.any || call_index <= F.after)
        return;
    if (F.prob < 1) {
        double u = (double)(sg_hash(F.seed, call_index) >> 11) * 0x1p-53;
        if (u >= F.prob)
            return;
    }
    plan->zero = F.zero;
    plan->perturb = F.perturb;
    plan->rows = F.rows;
    plan->weights = F.weights;
    plan->precision = F.precision;
    plan->keep_k = F.keep_k;
    plan->row_scale = F.row_scale;
    plan->seed = sg_hash(F.seed ^ 0x9e3779b97f4a7c15ull, call_index);
    plan->weight_seed = F.seed;
}

int sg_splitk(uint64_t *seed) {
    pthread_once(&once, load);
    *seed = F.splitk_seed;
    return F.splitk;
}
