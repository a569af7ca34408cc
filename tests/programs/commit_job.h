/*
 * The job of mmaudit_commit_leaves as the host side writes it (the ABI of
 * cuda/gather.cu, cuda/README.md), for the programs that launch the commitment
 * kernels: tests/programs/simgpu_commit.c and scripts/gpu/commit_bench.c.
 */
#ifndef COMMIT_JOB_H
#define COMMIT_JOB_H

#include <stddef.h>

typedef struct mmaudit_commit_job {
    unsigned long long src;
    unsigned long long out;
    long long batch_stride;
    long long vec_stride;
    long long elem_stride;
    unsigned int nb, nv, len;
    unsigned int elem_size;
    unsigned int flags;
    unsigned int reserved;
} mmaudit_commit_job;

_Static_assert(sizeof(mmaudit_commit_job) == 64, "job size");
_Static_assert(offsetof(mmaudit_commit_job, out) == 8, "out");
_Static_assert(offsetof(mmaudit_commit_job, batch_stride) == 16, "batch_stride");
_Static_assert(offsetof(mmaudit_commit_job, vec_stride) == 24, "vec_stride");
_Static_assert(offsetof(mmaudit_commit_job, elem_stride) == 32, "elem_stride");
_Static_assert(offsetof(mmaudit_commit_job, nb) == 40, "nb");
_Static_assert(offsetof(mmaudit_commit_job, nv) == 44, "nv");
_Static_assert(offsetof(mmaudit_commit_job, len) == 48, "len");
_Static_assert(offsetof(mmaudit_commit_job, elem_size) == 52, "elem_size");
_Static_assert(offsetof(mmaudit_commit_job, flags) == 56, "flags");
_Static_assert(offsetof(mmaudit_commit_job, reserved) == 60, "reserved");

#endif
