#ifndef KD_CSENTENCEPIECE_H
#define KD_CSENTENCEPIECE_H
// A C API over libsentencepiece's C++ SentencePieceProcessor, for Swift.
// Every function that can fail returns 0 on success and -1 on failure with a message in `error`.
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kd_spm kd_spm;

/// Loads a model from a file path. Returns NULL and fills `error` on failure.
kd_spm *kd_spm_load_file(const char *path, char *error, size_t error_size);
/// Loads a model from the bytes of a serialized ModelProto. Returns NULL and fills `error` on failure.
kd_spm *kd_spm_load_bytes(const void *bytes, size_t count, char *error, size_t error_size);
void kd_spm_free(kd_spm *model);

/// Number of pieces in the vocabulary.
int32_t kd_spm_piece_count(const kd_spm *model);
/// Id of `piece`, or the unknown id when the piece is not in the vocabulary.
int32_t kd_spm_piece_to_id(const kd_spm *model, const char *piece);
/// Copies the piece for `id` (NUL-terminated) into `out`; returns its length, or -1 when `id` is out of range
/// or `out` is too small.
int32_t kd_spm_id_to_piece(const kd_spm *model, int32_t id, char *out, size_t out_size);
int32_t kd_spm_unk_id(const kd_spm *model);

/// Encodes UTF-8 text to piece ids. Writes at most `capacity` ids to `ids` and returns the full count
/// (call again with a larger buffer if it exceeds `capacity`); returns -1 and fills `error` on failure.
int32_t kd_spm_encode(const kd_spm *model, const char *text, size_t text_length,
                      int32_t *ids, size_t capacity, char *error, size_t error_size);

#ifdef __cplusplus
}
#endif
#endif
