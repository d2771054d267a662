/*
 * float_math — test guest for floating point and 64-bit integer state: f64
 * and f32 values (in locals, globals and memory) must come through a
 * checkpoint bit for bit.
 *
 * Usage: float_math [rounds] [work]
 *   rounds  number of rounds (default 40)
 *   work    work per round in thousands of steps (default 4000)
 *
 * Each round runs, `work`-scaled: a logistic map in double and in float,
 * one Mandelbrot row, a 5-body simulation (the classic planets), a sum of
 * libm functions (sin, cos, sqrt, exp, log1p, atan2, pow, cbrt), a long
 * double (binary128, soft-float in compiler-rt) harmonic sum, and 64-bit
 * integer arithmetic (an LCG, wrapping multiplication, 128-bit products,
 * shifts, rotates, signed division). No NaN is ever produced (wasm leaves
 * NaN sign and payload bits open).
 *
 * Output, all deterministic, five lines per round:
 *   round N logistic D(%.17g) D(%a) F(%.9g) F(%a)
 *   round N mandel row R iters I zsum D(%.17g) nbody energy D(%.17g)
 *   round N libm D(%a) tiny D(%a) ld HHHHHHHHHHHHHHHH:HHHHHHHHHHHHHHHH
 *   round N i64 lcg HEX mul HEX hi HEX shr HEX rot HEX div HEX mod HEX
 *   round N float bits HHHHHHHH sqrtf F(%a) sinf F(%a)
 * then `done rounds N hash HHHHHHHHHHHHHHHH` and exit 0.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"

#define NBODIES 5
#define PI 3.141592653589793
#define SOLAR_MASS (4 * PI * PI)
#define DAYS_PER_YEAR 365.24

struct body {
    double x, y, z, vx, vy, vz, mass;
};

static struct body bodies[NBODIES] = {
    {0, 0, 0, 0, 0, 0, SOLAR_MASS},
    {4.84143144246472090e+00, -1.16032004402742839e+00, -1.03622044471123109e-01,
     1.66007664274403694e-03 * DAYS_PER_YEAR, 7.69901118419740425e-03 * DAYS_PER_YEAR,
     -6.90460016972063023e-05 * DAYS_PER_YEAR, 9.54791938424326609e-04 * SOLAR_MASS},
    {8.34336671824457987e+00, 4.12479856412430479e+00, -4.03523417114321381e-01,
     -2.76742510726862411e-03 * DAYS_PER_YEAR, 4.99852801234917238e-03 * DAYS_PER_YEAR,
     2.30417297573763929e-05 * DAYS_PER_YEAR, 2.85885980666130812e-04 * SOLAR_MASS},
    {1.28943695621391310e+01, -1.51111514016986312e+01, -2.23307578892655734e-01,
     2.96460137564761618e-03 * DAYS_PER_YEAR, 2.37847173959480950e-03 * DAYS_PER_YEAR,
     -2.96589568540237556e-05 * DAYS_PER_YEAR, 4.36624404335156298e-05 * SOLAR_MASS},
    {1.53796971148509165e+01, -2.59193146099879641e+01, 1.79258772950371181e-01,
     2.68067772490389322e-03 * DAYS_PER_YEAR, 1.62824170038242295e-03 * DAYS_PER_YEAR,
     -9.51592254519715870e-05 * DAYS_PER_YEAR, 5.15138902046611451e-05 * SOLAR_MASS},
};

static double logistic_x = 0.1;
static float logistic_f = 0.2f;
static uint64_t lcg_state = 0x853C49E6748FEA9BULL;
static long double ld_sum = 0;
static uint64_t ld_k = 1;

static void advance(double dt) {
    for (int i = 0; i < NBODIES; i++) {
        struct body *a = &bodies[i];
        for (int j = i + 1; j < NBODIES; j++) {
            struct body *b = &bodies[j];
            double dx = a->x - b->x, dy = a->y - b->y, dz = a->z - b->z;
            double d2 = dx * dx + dy * dy + dz * dz;
            double mag = dt / (d2 * sqrt(d2));
            a->vx -= dx * b->mass * mag;
            a->vy -= dy * b->mass * mag;
            a->vz -= dz * b->mass * mag;
            b->vx += dx * a->mass * mag;
            b->vy += dy * a->mass * mag;
            b->vz += dz * a->mass * mag;
        }
    }
    for (int i = 0; i < NBODIES; i++) {
        bodies[i].x += dt * bodies[i].vx;
        bodies[i].y += dt * bodies[i].vy;
        bodies[i].z += dt * bodies[i].vz;
    }
}

static double energy(void) {
    double e = 0;
    for (int i = 0; i < NBODIES; i++) {
        struct body *a = &bodies[i];
        e += 0.5 * a->mass * (a->vx * a->vx + a->vy * a->vy + a->vz * a->vz);
        for (int j = i + 1; j < NBODIES; j++) {
            struct body *b = &bodies[j];
            double dx = a->x - b->x, dy = a->y - b->y, dz = a->z - b->z;
            e -= a->mass * b->mass / sqrt(dx * dx + dy * dy + dz * dz);
        }
    }
    return e;
}

static uint64_t bits_d(double d) {
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static uint64_t mix(uint64_t h, uint64_t v) {
    return (h ^ v) * 0x100000001B3ULL;
}

int main(int argc, char **argv) {
    uint64_t rounds = 40, work = 4000;

    setvbuf(stdout, NULL, _IOLBF, 0);

    if ((argc > 1 && parse_u64(argv[1], &rounds) != 0) ||
        (argc > 2 && parse_u64(argv[2], &work) != 0) || argc > 3 || work < 1 ||
        work > 1000000) {
        fprintf(stderr, "usage: float_math [rounds] [work (1..1000000)]\n");
        return 2;
    }
    uint64_t steps = work * 1000;
    uint64_t h = 0xcbf29ce484222325ULL;

    for (uint64_t r = 1; r <= rounds; r++) {
        /* Logistic maps, double and float. */
        double x = logistic_x;
        float f = logistic_f;
        for (uint64_t i = 0; i < steps; i++) {
            x = 3.99 * x * (1.0 - x);
            f = 3.7f * f * (1.0f - f);
        }
        logistic_x = x;
        logistic_f = f;
        printf("round %llu logistic %.17g %a %.9g %a\n", (unsigned long long)r, x, x, (double)f,
               (double)f);

        /* One Mandelbrot row of 256 points, up to 16 + 64 * work / 100 iterations. */
        int row = (int)(r % 200);
        int maxit = (int)(16 + work * 64 / 100);
        uint64_t iters = 0;
        double zsum = 0;
        double ci = -1.2 + 2.4 * row / 200.0;
        for (int col = 0; col < 256; col++) {
            double cr = -2.1 + 2.8 * col / 256.0, zr = 0, zi = 0;
            int it = 0;
            while (it < maxit && zr * zr + zi * zi <= 4.0) {
                double t = zr * zr - zi * zi + cr;
                zi = 2 * zr * zi + ci;
                zr = t;
                it++;
            }
            iters += (uint64_t)it;
            zsum += zr * zr + zi * zi;
        }

        /* N-body. */
        for (uint64_t i = 0; i < steps / 8; i++) {
            advance(0.01);
        }
        double e = energy();
        printf("round %llu mandel row %d iters %llu zsum %.17g nbody energy %.17g\n",
               (unsigned long long)r, row, (unsigned long long)iters, zsum, e);

        /* libm, a subnormal, long double. */
        double acc = 0;
        for (uint64_t i = 1; i <= steps / 16; i++) {
            double t = (double)(i + r * 7) * 1e-3;
            acc += sin(t) * cos(t * 0.5) + sqrt(t) + exp(-t * 1e-3) + log1p(t) +
                   atan2(t, 1.0 + acc * 1e-9) + pow(t, 0.3) + cbrt(t);
        }
        double tiny = 0x1p-1060 * (1.0 + x); /* subnormal */
        for (uint64_t i = 0; i < steps / 64; i++, ld_k++) {
            ld_sum += 1.0L / (long double)ld_k;
        }
        uint64_t ld_bits[2];
        memcpy(ld_bits, &ld_sum, sizeof ld_bits);
        printf("round %llu libm %a tiny %a ld %016llx:%016llx\n", (unsigned long long)r, acc, tiny,
               (unsigned long long)ld_bits[1], (unsigned long long)ld_bits[0]);

        /* 64-bit integers. */
        uint64_t mul = 1, shr = 0, rot = 0x0123456789ABCDEFULL;
        unsigned __int128 wide = 0;
        int64_t div = 0, mod = 0;
        for (uint64_t i = 0; i < steps; i++) {
            lcg_state = lcg_state * 6364136223846793005ULL + 1442695040888963407ULL;
            uint64_t v = lcg_state;
            mul = mul * (v | 1);
            shr ^= (v >> (v & 63)) + ((int64_t)v >> 7);
            rot = ((rot << 13) | (rot >> 51)) ^ v;
            if ((i & 15) == 0) {
                wide += (unsigned __int128)v * mul;
                int64_t sv = (int64_t)v, d = (int64_t)(v >> 40) - (1LL << 23);
                if (d != 0 && d != -1) { /* no division trap */
                    div = (int64_t)((uint64_t)div + (uint64_t)(sv / d));
                    mod ^= sv % d;
                }
            }
        }
        printf("round %llu i64 lcg %016llx mul %016llx hi %016llx shr %016llx rot %016llx "
               "div %016llx mod %016llx\n",
               (unsigned long long)r, (unsigned long long)lcg_state, (unsigned long long)mul,
               (unsigned long long)(uint64_t)(wide >> 64), (unsigned long long)shr,
               (unsigned long long)rot, (unsigned long long)div, (unsigned long long)mod);

        /* float: bits, sqrtf, sinf. */
        float fs = 0, fq = 0;
        for (uint64_t i = 1; i <= steps / 16; i++) {
            fs += sinf((float)(i + r) * 0.01f);
            fq += sqrtf((float)(i * r));
        }
        uint32_t fbits;
        memcpy(&fbits, &f, sizeof fbits);
        printf("round %llu float bits %08x sqrtf %a sinf %a\n", (unsigned long long)r,
               (unsigned)fbits, (double)fq, (double)fs);

        h = mix(h, bits_d(x));
        h = mix(h, fbits);
        h = mix(h, bits_d(e));
        h = mix(h, bits_d(acc));
        h = mix(h, ld_bits[0] ^ ld_bits[1]);
        h = mix(h, lcg_state ^ mul ^ shr ^ rot ^ (uint64_t)div ^ (uint64_t)mod);
        h = mix(h, iters + bits_d(zsum));
    }
    printf("done rounds %llu hash %016llx\n", (unsigned long long)rounds, (unsigned long long)h);
    return 0;
}
