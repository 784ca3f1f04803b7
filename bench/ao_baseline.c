/*
 * The yardstick of bench/ao_speed.py: the classic aobench (Syoyo Fujita's ao.c) in C,
 * as it is usually compiled (gcc -O3), rendering the same job as Francine's numba
 * `ao` producer. Baseline only, never part of the product.
 *
 * It is the classic code (double precision, structs, libm cos/sin/sqrt, every AO ray
 * tested against every sphere and the plane) with two changes that make it render the
 * same image as the producer, so that the benchmark can check that both did the same
 * work:
 *   - drand48() is replaced by the producer's per-pixel splitmix64 stream (see
 *     shared/francine/producers/ao/reference.py): one draw per AO ray gives r1 (its top
 *     24 bits) and r2 (its middle 24 bits);
 *   - the result is the mean shade per pixel as floats (no clamping to bytes), and the
 *     image size, subsamples and AO samples are arguments.
 *
 * Built by the benchmark as a shared library and called through ctypes:
 *   void ao_render(float *img, int w, int h, int nsubsamples, int nao_samples,
 *                  uint64_t seed);
 */
#include <math.h>
#include <stdint.h>

typedef struct { double x, y, z; } vec;
typedef struct { double t; vec p; vec n; int hit; } Isect;
typedef struct { vec center; double radius; } Sphere;
typedef struct { vec p; vec n; } Plane;
typedef struct { vec org; vec dir; } Ray;

static Sphere spheres[3] = {
    {{-2.0, 0.0, -3.5}, 0.5},
    {{-0.5, 0.0, -3.0}, 0.5},
    {{1.0, 0.0, -2.2}, 0.5},
};
static Plane plane = {{0.0, -0.5, 0.0}, {0.0, 1.0, 0.0}};

#define GAMMA 0x9E3779B97F4A7C15ULL

static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline uint64_t hash64(uint64_t x) { return mix64(x + GAMMA); }

static double vdot(vec v0, vec v1) { return v0.x * v1.x + v0.y * v1.y + v0.z * v1.z; }

static void vcross(vec *c, vec v0, vec v1) {
    c->x = v0.y * v1.z - v0.z * v1.y;
    c->y = v0.z * v1.x - v0.x * v1.z;
    c->z = v0.x * v1.y - v0.y * v1.x;
}

static void vnormalize(vec *c) {
    double length = sqrt(vdot((*c), (*c)));
    if (fabs(length) > 1.0e-17) {
        c->x /= length;
        c->y /= length;
        c->z /= length;
    }
}

static void ray_sphere_intersect(Isect *isect, const Ray *ray, const Sphere *sphere) {
    vec rs;
    rs.x = ray->org.x - sphere->center.x;
    rs.y = ray->org.y - sphere->center.y;
    rs.z = ray->org.z - sphere->center.z;
    double B = vdot(rs, ray->dir);
    double C = vdot(rs, rs) - sphere->radius * sphere->radius;
    double D = B * B - C;
    if (D > 0.0) {
        double t = -B - sqrt(D);
        if ((t > 0.0) && (t < isect->t)) {
            isect->t = t;
            isect->hit = 1;
            isect->p.x = ray->org.x + ray->dir.x * t;
            isect->p.y = ray->org.y + ray->dir.y * t;
            isect->p.z = ray->org.z + ray->dir.z * t;
            isect->n.x = isect->p.x - sphere->center.x;
            isect->n.y = isect->p.y - sphere->center.y;
            isect->n.z = isect->p.z - sphere->center.z;
            vnormalize(&(isect->n));
        }
    }
}

static void ray_plane_intersect(Isect *isect, const Ray *ray, const Plane *pl) {
    double d = -vdot(pl->p, pl->n);
    double v = vdot(ray->dir, pl->n);
    if (fabs(v) < 1.0e-17) return;
    double t = -(vdot(ray->org, pl->n) + d) / v;
    if ((t > 0.0) && (t < isect->t)) {
        isect->t = t;
        isect->hit = 1;
        isect->p.x = ray->org.x + ray->dir.x * t;
        isect->p.y = ray->org.y + ray->dir.y * t;
        isect->p.z = ray->org.z + ray->dir.z * t;
        isect->n = pl->n;
    }
}

static void orthoBasis(vec *basis, vec n) {
    basis[2] = n;
    basis[1].x = 0.0;
    basis[1].y = 0.0;
    basis[1].z = 0.0;
    if ((n.x < 0.6) && (n.x > -0.6)) {
        basis[1].x = 1.0;
    } else if ((n.y < 0.6) && (n.y > -0.6)) {
        basis[1].y = 1.0;
    } else if ((n.z < 0.6) && (n.z > -0.6)) {
        basis[1].z = 1.0;
    } else {
        basis[1].x = 1.0;
    }
    vcross(&basis[0], basis[1], basis[2]);
    vnormalize(&basis[0]);
    vcross(&basis[1], basis[2], basis[0]);
    vnormalize(&basis[1]);
}

/* The shade of a hit; draws first+1 ... first+nao*nao of the pixel's stream. */
static double ambient_occlusion(const Isect *isect, int nao, uint64_t state, uint64_t first) {
    int i, j;
    int ntheta = nao;
    int nphi = nao;
    double eps = 0.0001;
    vec p;
    p.x = isect->p.x + eps * isect->n.x;
    p.y = isect->p.y + eps * isect->n.y;
    p.z = isect->p.z + eps * isect->n.z;
    vec basis[3];
    orthoBasis(basis, isect->n);
    double occlusion = 0.0;
    uint64_t k = first;
    for (j = 0; j < ntheta; j++) {
        for (i = 0; i < nphi; i++) {
            uint64_t z = mix64(state + (++k) * GAMMA);
            double r1 = (double)(z >> 40) / 16777216.0;
            double r2 = (double)((z >> 16) & 0xFFFFFFULL) / 16777216.0;
            double theta = sqrt(r1);
            double phi = 2.0 * M_PI * r2;
            double x = cos(phi) * theta;
            double y = sin(phi) * theta;
            double zz = sqrt(1.0 - theta * theta);
            /* local -> global */
            double rx = x * basis[0].x + y * basis[1].x + zz * basis[2].x;
            double ry = x * basis[0].y + y * basis[1].y + zz * basis[2].y;
            double rz = x * basis[0].z + y * basis[1].z + zz * basis[2].z;
            Ray ray;
            ray.org = p;
            ray.dir.x = rx;
            ray.dir.y = ry;
            ray.dir.z = rz;
            Isect occIsect;
            occIsect.t = 1.0e+17;
            occIsect.hit = 0;
            ray_sphere_intersect(&occIsect, &ray, &spheres[0]);
            ray_sphere_intersect(&occIsect, &ray, &spheres[1]);
            ray_sphere_intersect(&occIsect, &ray, &spheres[2]);
            ray_plane_intersect(&occIsect, &ray, &plane);
            if (occIsect.hit) occlusion += 1.0;
        }
    }
    return (ntheta * nphi - occlusion) / (double)(ntheta * nphi);
}

void ao_render(float *img, int w, int h, int nsubsamples, int nao, uint64_t seed) {
    int x, y, u, v;
    for (y = 0; y < h; y++) {
        for (x = 0; x < w; x++) {
            uint64_t state = hash64(seed ^ hash64((uint64_t)y * (uint64_t)w + (uint64_t)x));
            double sum = 0.0;
            for (v = 0; v < nsubsamples; v++) {
                for (u = 0; u < nsubsamples; u++) {
                    double px = (x + (u / (double)nsubsamples) - (w / 2.0)) / (w / 2.0);
                    double py = -(y + (v / (double)nsubsamples) - (h / 2.0)) / (h / 2.0);
                    Ray ray;
                    ray.org.x = 0.0;
                    ray.org.y = 0.0;
                    ray.org.z = 0.0;
                    ray.dir.x = px;
                    ray.dir.y = py;
                    ray.dir.z = -1.0;
                    vnormalize(&(ray.dir));
                    Isect isect;
                    isect.t = 1.0e+17;
                    isect.hit = 0;
                    ray_sphere_intersect(&isect, &ray, &spheres[0]);
                    ray_sphere_intersect(&isect, &ray, &spheres[1]);
                    ray_sphere_intersect(&isect, &ray, &spheres[2]);
                    ray_plane_intersect(&isect, &ray, &plane);
                    if (isect.hit) {
                        uint64_t first = (uint64_t)(v * nsubsamples + u) * (uint64_t)(nao * nao);
                        sum += ambient_occlusion(&isect, nao, state, first);
                    }
                }
            }
            img[y * w + x] = (float)(sum / (double)(nsubsamples * nsubsamples));
        }
    }
}
