/* bench_plot.c: line plots as PNG for the bench commands (see bench_plot in bench.h).
 *
 * A small software renderer over an RGB pixel buffer: frame, axes with "nice" ticks
 * (1-2-5 steps, or powers of two on a log2 x axis), grid, one coloured polyline with
 * square markers per series, a legend, title and axis labels. Text uses the bitmap
 * glyphs of stb_easy_font (libstb-dev), rasterised here as filled rectangles at 1x or
 * 2x scale; the PNG is written by stb_image_write. This is the only file that defines
 * STB_IMAGE_WRITE_IMPLEMENTATION.
 *
 * Invariants: every drawing primitive clips to the buffer, so no input (empty series,
 * NaN values, a single point, equal min and max) can write outside it; non-finite
 * points are skipped and break the line. */
#include "bench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_easy_font.h>
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

typedef struct canvas {
    int w, h;
    unsigned char *px; /* RGB rows */
} canvas;

typedef struct rgb {
    unsigned char r, g, b;
} rgb;

static const rgb palette[BENCH_PLOT_MAX_SERIES] = {
    {31, 119, 180},  {214, 39, 40}, {44, 160, 44},   {255, 127, 14},
    {148, 103, 189}, {140, 86, 75}, {227, 119, 194}, {23, 190, 207},
};
static const rgb black = {0, 0, 0}, grid_grey = {225, 225, 225}, white = {255, 255, 255};

static void put(canvas *c, int x, int y, rgb col) {
    if (x < 0 || y < 0 || x >= c->w || y >= c->h) return;
    unsigned char *p = c->px + ((size_t)y * c->w + x) * 3;
    p[0] = col.r, p[1] = col.g, p[2] = col.b;
}

static void fill_rect(canvas *c, int x0, int y0, int x1, int y1, rgb col) {
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++)
            put(c, x, y, col);
}

/* Bresenham with a square pen of `thick` pixels. */
static void line(canvas *c, int x0, int y0, int x1, int y1, int thick, rgb col) {
    int dx = abs(x1 - x0), sx = x0 < x1 ? 1 : -1;
    int dy = -abs(y1 - y0), sy = y0 < y1 ? 1 : -1;
    int err = dx + dy;
    for (int guard = 0; guard < 100000; guard++) {
        fill_rect(c, x0 - thick / 2, y0 - thick / 2, x0 - thick / 2 + thick, y0 - thick / 2 + thick,
                  col);
        if (x0 == x1 && y0 == y1) break;
        int e2 = 2 * err;
        if (e2 >= dy) err += dy, x0 += sx;
        if (e2 <= dx) err += dx, y0 += sy;
    }
}

/* Text with its top-left corner at (x, y). */
static void text(canvas *c, int x, int y, const char *s, int scale, rgb col) {
    static char vbuf[60000];
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    int quads = stb_easy_font_print(0, 0, buf, NULL, vbuf, sizeof vbuf);
    for (int q = 0; q < quads; q++) {
        const float *v0 = (const float *)(vbuf + (size_t)q * 64);      /* vertex 0 */
        const float *v2 = (const float *)(vbuf + (size_t)q * 64 + 32); /* vertex 2 */
        fill_rect(c, x + (int)(v0[0] * scale), y + (int)(v0[1] * scale), x + (int)(v2[0] * scale),
                  y + (int)(v2[1] * scale), col);
    }
}

static int text_width(const char *s, int scale) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    return stb_easy_font_width(buf) * scale;
}

/* Vertical text (the y label): rendered on a scratch canvas and rotated 90 degrees. */
static void text_vertical(canvas *c, int x, int y_center, const char *s, int scale, rgb col) {
    int w = text_width(s, scale) + 2, h = 8 * scale;
    canvas t = {w, h, calloc((size_t)w * h * 3, 1)};
    if (!t.px) return;
    memset(t.px, 255, (size_t)w * h * 3);
    text(&t, 0, 0, s, scale, col);
    for (int ty = 0; ty < h; ty++)
        for (int tx = 0; tx < w; tx++) {
            unsigned char *p = t.px + ((size_t)ty * w + tx) * 3;
            if (p[0] == 255 && p[1] == 255 && p[2] == 255) continue;
            put(c, x + ty, y_center + w / 2 - tx, (rgb){p[0], p[1], p[2]});
        }
    free(t.px);
}

/* ---------------------------------------------------------------- axes */

static double nice_step(double range, int target_ticks) {
    double raw = range / target_ticks;
    double mag = pow(10, floor(log10(raw)));
    double f = raw / mag;
    double nice = f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10;
    return nice * mag;
}

static void format_tick(char *buf, size_t n, double v) {
    double a = fabs(v);
    if (a == 0)
        snprintf(buf, n, "0");
    else if (a >= 1e6)
        snprintf(buf, n, "%.3gM", v / 1e6);
    else if (a >= 1e4)
        snprintf(buf, n, "%.3gk", v / 1e3);
    else
        snprintf(buf, n, "%.4g", v);
}

typedef struct axis {
    double lo, hi;
    bool log2;
} axis;

static double axis_frac(const axis *a, double v) {
    if (a->log2) return (log2(v) - log2(a->lo)) / (log2(a->hi) - log2(a->lo));
    return (v - a->lo) / (a->hi - a->lo);
}

bool bench_plot_png(const bench_plot *plot, const char *path, int width, int height) {
    if (!width) width = 800;
    if (!height) height = 500;
    canvas c = {width, height, malloc((size_t)width * height * 3)};
    if (!c.px) return false;
    memset(c.px, 255, (size_t)width * height * 3);

    /* Data ranges over finite points (log axes: positive x only). */
    axis ax = {INFINITY, -INFINITY, plot->log_x}, ay = {0, -INFINITY, false};
    for (size_t s = 0; s < plot->n_series; s++)
        for (size_t i = 0; i < plot->series[s].n; i++) {
            double x = plot->series[s].x[i], y = plot->series[s].y[i];
            if (!isfinite(x) || !isfinite(y) || (ax.log2 && x <= 0)) continue;
            if (x < ax.lo) ax.lo = x;
            if (x > ax.hi) ax.hi = x;
            if (y < ay.lo) ay.lo = y;
            if (y > ay.hi) ay.hi = y;
        }
    if (!isfinite(ax.lo)) ax.lo = 0, ax.hi = 1, ax.log2 = false;
    if (!isfinite(ay.hi)) ay.hi = 1;
    if (ax.log2) {
        ax.lo = exp2(floor(log2(ax.lo)));
        ax.hi = exp2(ceil(log2(ax.hi)));
        if (ax.hi <= ax.lo) ax.hi = ax.lo * 2;
    } else if (ax.hi <= ax.lo) {
        ax.hi = ax.lo + 1;
    }
    if (ay.hi <= ay.lo) ay.hi = ay.lo + 1;
    double ystep = nice_step(ay.hi - ay.lo, 6);
    ay.lo = floor(ay.lo / ystep) * ystep;
    ay.hi = ceil(ay.hi / ystep) * ystep * 1.0000001;
    double xstep = ax.log2 ? 0 : nice_step(ax.hi - ax.lo, 8);
    if (!ax.log2) {
        ax.lo = floor(ax.lo / xstep) * xstep;
        ax.hi = ceil(ax.hi / xstep) * xstep * 1.0000001;
    }

    int left = 80, right = width - 20, top = 40, bottom = height - 60;
    int pw = right - left, ph = bottom - top;

    /* Grid and ticks. */
    char buf[64];
    for (double y = ay.lo; y <= ay.hi; y += ystep) {
        int py = bottom - (int)lround(axis_frac(&ay, y) * ph);
        line(&c, left, py, right, py, 1, grid_grey);
        line(&c, left - 5, py, left, py, 1, black);
        format_tick(buf, sizeof buf, fabs(y) < ystep * 1e-9 ? 0 : y);
        text(&c, left - 8 - text_width(buf, 1), py - 3, buf, 1, black);
    }
    int n_xticks = 0;
    for (double x = ax.lo; x <= ax.hi && n_xticks < 40; n_xticks++) {
        int px = left + (int)lround(axis_frac(&ax, x) * pw);
        line(&c, px, top, px, bottom, 1, grid_grey);
        line(&c, px, bottom, px, bottom + 5, 1, black);
        format_tick(buf, sizeof buf, fabs(x) < 1e-12 ? 0 : x);
        text(&c, px - text_width(buf, 1) / 2, bottom + 9, buf, 1, black);
        x = ax.log2 ? x * 2 : x + xstep;
    }
    line(&c, left, top, left, bottom, 1, black);
    line(&c, left, bottom, right, bottom, 1, black);

    /* Series. */
    for (size_t s = 0; s < plot->n_series; s++) {
        const bench_series *se = &plot->series[s];
        rgb col = palette[s % BENCH_PLOT_MAX_SERIES];
        bool have_prev = false;
        int prev_x = 0, prev_y = 0;
        for (size_t i = 0; i < se->n; i++) {
            double x = se->x[i], y = se->y[i];
            if (!isfinite(x) || !isfinite(y) || (ax.log2 && x <= 0)) {
                have_prev = false;
                continue;
            }
            int px = left + (int)lround(axis_frac(&ax, x) * pw);
            int py = bottom - (int)lround(axis_frac(&ay, y) * ph);
            if (have_prev) line(&c, prev_x, prev_y, px, py, 2, col);
            if (se->n <= 64) fill_rect(&c, px - 3, py - 3, px + 4, py + 4, col);
            prev_x = px, prev_y = py, have_prev = true;
        }
    }

    /* Legend (top left inside the plot), title, axis labels. */
    int ly = top + 8;
    for (size_t s = 0; s < plot->n_series; s++) {
        if (!plot->series[s].label) continue;
        int lw = text_width(plot->series[s].label, 1);
        fill_rect(&c, left + 8, ly - 2, left + 40 + lw + 8, ly + 12, white);
        fill_rect(&c, left + 12, ly + 3, left + 32, ly + 6, palette[s % BENCH_PLOT_MAX_SERIES]);
        text(&c, left + 38, ly, plot->series[s].label, 1, black);
        ly += 14;
    }
    if (plot->title) text(&c, (width - text_width(plot->title, 2)) / 2, 10, plot->title, 2, black);
    if (plot->x_label)
        text(&c, left + (pw - text_width(plot->x_label, 2)) / 2, height - 30, plot->x_label, 2,
             black);
    if (plot->y_label) text_vertical(&c, 10, top + ph / 2, plot->y_label, 2, black);

    bool ok = stbi_write_png(path, width, height, 3, c.px, width * 3) != 0;
    free(c.px);
    if (!ok) fprintf(stderr, "vkllm bench: cannot write %s\n", path);
    return ok;
}
