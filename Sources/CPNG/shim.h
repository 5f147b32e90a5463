#ifndef KD_CPNG_SHIM_H
#define KD_CPNG_SHIM_H
// libpng 1.6. Reading and plain writing go through the simplified png_image API (no setjmp);
// writing with text chunks needs the classic API, whose longjmp error path is kept inside C here:
// kd_png_write_rgb never returns through a longjmp into Swift.
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>

typedef struct kd_png_text {
    const char *key;        // Latin-1 keyword, 1-79 bytes
    const char *text;       // iTXt: UTF-8 bytes; tEXt: Latin-1 bytes (PNG 1.2 §11.3.4.3), NUL-terminated
    int international;      // 1: write an iTXt chunk (UTF-8), 0: tEXt (Latin-1)
} kd_png_text;

typedef struct kd_png_error_state {
    jmp_buf jump;
    char message[256];
} kd_png_error_state;

static inline void kd_png_error_fn(png_structp png, png_const_charp msg) {
    kd_png_error_state *state = (kd_png_error_state *)png_get_error_ptr(png);
    strncpy(state->message, msg ? msg : "libpng error", sizeof(state->message) - 1);
    state->message[sizeof(state->message) - 1] = 0;
    longjmp(state->jump, 1);
}

static inline void kd_png_warning_fn(png_structp png, png_const_charp msg) {
    (void)png; (void)msg;
}

typedef struct kd_png_buffer {
    unsigned char *data;
    size_t size;
    size_t capacity;
    int failed;
} kd_png_buffer;

static inline void kd_png_write_to_buffer(png_structp png, png_bytep bytes, png_size_t length) {
    kd_png_buffer *buf = (kd_png_buffer *)png_get_io_ptr(png);
    if (buf->failed) return;
    if (buf->size + length > buf->capacity) {
        size_t cap = buf->capacity ? buf->capacity : 4096;
        while (cap < buf->size + length) cap *= 2;
        unsigned char *grown = (unsigned char *)realloc(buf->data, cap);
        if (!grown) { buf->failed = 1; png_error(png, "out of memory"); return; }
        buf->data = grown;
        buf->capacity = cap;
    }
    memcpy(buf->data + buf->size, bytes, length);
    buf->size += length;
}

static inline void kd_png_flush_noop(png_structp png) { (void)png; }

/// Encodes 8-bit pixels (channels 1 = gray, 3 = RGB, 4 = RGBA; rows packed) as a PNG in memory, with text chunks.
/// Returns 0 and sets *out / *out_size (free with free()) on success; returns -1 and fills `error` otherwise.
static inline int kd_png_encode(const unsigned char *pixels, unsigned width, unsigned height, int channels,
                                const kd_png_text *texts, int text_count,
                                unsigned char **out, size_t *out_size, char *error, size_t error_size) {
    kd_png_error_state state;
    state.message[0] = 0;
    kd_png_buffer buf = { NULL, 0, 0, 0 };
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &state, kd_png_error_fn, kd_png_warning_fn);
    if (!png) { snprintf(error, error_size, "png_create_write_struct failed"); return -1; }
    png_infop info = png_create_info_struct(png);
    png_textp volatile text_chunks = NULL;
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        snprintf(error, error_size, "png_create_info_struct failed");
        return -1;
    }
    if (setjmp(state.jump)) {
        png_destroy_write_struct(&png, &info);
        free(text_chunks);
        free(buf.data);
        snprintf(error, error_size, "%s", state.message[0] ? state.message : "libpng error");
        return -1;
    }
    int color_type = channels == 1 ? PNG_COLOR_TYPE_GRAY
                   : channels == 3 ? PNG_COLOR_TYPE_RGB
                   : channels == 4 ? PNG_COLOR_TYPE_RGB_ALPHA : -1;
    if (color_type < 0) png_error(png, "unsupported channel count (1, 3 or 4)");
    png_set_write_fn(png, &buf, kd_png_write_to_buffer, kd_png_flush_noop);
    png_set_IHDR(png, info, width, height, 8, color_type, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (text_count > 0) {
        text_chunks = (png_textp)calloc((size_t)text_count, sizeof(png_text));
        if (!text_chunks) png_error(png, "out of memory");
        for (int i = 0; i < text_count; i++) {
            text_chunks[i].key = (png_charp)texts[i].key;
            text_chunks[i].text = (png_charp)texts[i].text;
            text_chunks[i].text_length = strlen(texts[i].text);
            text_chunks[i].compression = texts[i].international ? PNG_ITXT_COMPRESSION_NONE : PNG_TEXT_COMPRESSION_NONE;
        }
        png_set_text(png, info, text_chunks, text_count);
    }
    png_write_info(png, info);
    size_t stride = (size_t)width * (size_t)channels;
    for (unsigned y = 0; y < height; y++) {
        png_write_row(png, (png_const_bytep)(pixels + stride * y));
    }
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    free(text_chunks);
    *out = buf.data;
    *out_size = buf.size;
    return 0;
}

typedef struct kd_png_reader {
    const unsigned char *data;
    size_t size;
    size_t offset;
} kd_png_reader;

static inline void kd_png_read_from_buffer(png_structp png, png_bytep out, png_size_t length) {
    kd_png_reader *r = (kd_png_reader *)png_get_io_ptr(png);
    if (r->offset + length > r->size) png_error(png, "truncated PNG data");
    memcpy(out, r->data + r->offset, length);
    r->offset += length;
}

/// One decoded text chunk (tEXt, zTXt or iTXt); strings are malloc'ed copies of the chunk's bytes: Latin-1 for
/// tEXt and zTXt (`international` 0), UTF-8 for iTXt (`international` 1).
typedef struct kd_png_decoded_text {
    char *key;
    char *text;
    int international;
} kd_png_decoded_text;

static inline void kd_png_free_texts(kd_png_decoded_text *texts, int count) {
    if (!texts) return;
    for (int i = 0; i < count; i++) { free(texts[i].key); free(texts[i].text); }
    free(texts);
}

/// Decodes a PNG held in memory to 8-bit RGB (channels 3) or RGBA (channels 4, when the file has alpha).
/// Images wider than max_width or taller than max_height are refused before any pixel is allocated.
/// Returns 0 on success (free *pixels with free(), *texts with kd_png_free_texts), -1 with `error` filled otherwise.
static inline int kd_png_decode(const unsigned char *data, size_t size, unsigned max_width, unsigned max_height,
                                unsigned *out_width, unsigned *out_height, int *out_channels,
                                unsigned char **pixels, kd_png_decoded_text **texts, int *text_count,
                                char *error, size_t error_size) {
    kd_png_error_state state;
    state.message[0] = 0;
    *pixels = NULL; *texts = NULL; *text_count = 0;
    if (size < 8 || png_sig_cmp((png_const_bytep)data, 0, 8) != 0) {
        snprintf(error, error_size, "not a PNG file (bad signature)");
        return -1;
    }
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &state, kd_png_error_fn, kd_png_warning_fn);
    if (!png) { snprintf(error, error_size, "png_create_read_struct failed"); return -1; }
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        snprintf(error, error_size, "png_create_info_struct failed");
        return -1;
    }
    unsigned char *volatile buffer = NULL;
    png_bytep *volatile rows = NULL;
    kd_png_decoded_text *volatile decoded = NULL;
    volatile int decoded_count = 0;
    if (setjmp(state.jump)) {
        png_destroy_read_struct(&png, &info, NULL);
        free(buffer);
        free(rows);
        kd_png_free_texts(decoded, decoded_count);
        snprintf(error, error_size, "%s", state.message[0] ? state.message : "libpng error");
        return -1;
    }
    kd_png_reader reader = { data, size, 0 };
    png_set_read_fn(png, &reader, kd_png_read_from_buffer);
    png_read_info(png, info);
    png_uint_32 width = png_get_image_width(png, info);
    png_uint_32 height = png_get_image_height(png, info);
    if (width > max_width || height > max_height) {
        snprintf(state.message, sizeof(state.message), "image is %ux%u, larger than the %ux%u limit",
                 (unsigned)width, (unsigned)height, max_width, max_height);
        longjmp(state.jump, 1);
    }
    int color_type = png_get_color_type(png, info);
    int bit_depth = png_get_bit_depth(png, info);
    if (bit_depth == 16) png_set_strip_16(png);
    if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    int has_alpha = (color_type & PNG_COLOR_MASK_ALPHA) != 0;
    if (png_get_valid(png, info, PNG_INFO_tRNS)) { png_set_tRNS_to_alpha(png); has_alpha = 1; }
    if (color_type == PNG_COLOR_TYPE_GRAY || color_type == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int channels = has_alpha ? 4 : 3;
    size_t stride = (size_t)width * (size_t)channels;
    if (png_get_rowbytes(png, info) != stride) png_error(png, "unexpected row size after conversion");
    buffer = (unsigned char *)malloc(stride * height);
    rows = (png_bytep *)malloc(sizeof(png_bytep) * height);
    if (!buffer || !rows) png_error(png, "out of memory");
    for (png_uint_32 y = 0; y < height; y++) rows[y] = buffer + stride * y;
    png_read_image(png, rows);
    png_read_end(png, info);
    png_textp chunks = NULL;
    int n = png_get_text(png, info, &chunks, NULL);
    if (n > 0) {
        decoded = (kd_png_decoded_text *)calloc((size_t)n, sizeof(kd_png_decoded_text));
        if (!decoded) png_error(png, "out of memory");
        for (int i = 0; i < n; i++) {
            decoded[i].key = strdup(chunks[i].key ? chunks[i].key : "");
            decoded[i].international = chunks[i].compression >= PNG_ITXT_COMPRESSION_NONE;
            // iTXt chunks report their length in itxt_length, tEXt/zTXt in text_length.
            size_t length = chunks[i].text ? strlen(chunks[i].text) : 0;
            decoded[i].text = (char *)malloc(length + 1);
            decoded_count = i + 1;
            if (!decoded[i].key || !decoded[i].text) png_error(png, "out of memory");
            if (length) memcpy(decoded[i].text, chunks[i].text, length);
            decoded[i].text[length] = 0;
        }
    }
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    *out_width = width; *out_height = height; *out_channels = channels;
    *pixels = buffer; *texts = decoded; *text_count = decoded_count;
    return 0;
}

#endif
