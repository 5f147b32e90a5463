#include "CSentencePiece.h"

#include <sentencepiece_processor.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

struct kd_spm {
    sentencepiece::SentencePieceProcessor processor;
};

namespace {
void write_error(char *error, size_t error_size, const std::string &message) {
    if (error && error_size > 0) std::snprintf(error, error_size, "%s", message.c_str());
}

kd_spm *finish_load(std::unique_ptr<kd_spm> model, const sentencepiece::util::Status &status, char *error,
                    size_t error_size) {
    if (!status.ok()) {
        write_error(error, error_size, status.ToString());
        return nullptr;
    }
    return model.release();
}
}  // namespace

extern "C" kd_spm *kd_spm_load_file(const char *path, char *error, size_t error_size) {
    try {
        auto model = std::make_unique<kd_spm>();
        auto status = model->processor.Load(path);
        return finish_load(std::move(model), status, error, error_size);
    } catch (const std::exception &e) {
        write_error(error, error_size, e.what());
        return nullptr;
    }
}

extern "C" kd_spm *kd_spm_load_bytes(const void *bytes, size_t count, char *error, size_t error_size) {
    try {
        auto model = std::make_unique<kd_spm>();
        auto status = model->processor.LoadFromSerializedProto(
            std::string(static_cast<const char *>(bytes), count));
        return finish_load(std::move(model), status, error, error_size);
    } catch (const std::exception &e) {
        write_error(error, error_size, e.what());
        return nullptr;
    }
}

extern "C" void kd_spm_free(kd_spm *model) { delete model; }

extern "C" int32_t kd_spm_piece_count(const kd_spm *model) { return model->processor.GetPieceSize(); }

extern "C" int32_t kd_spm_piece_to_id(const kd_spm *model, const char *piece) {
    return model->processor.PieceToId(piece);
}

extern "C" int32_t kd_spm_unk_id(const kd_spm *model) { return model->processor.unk_id(); }

extern "C" int32_t kd_spm_id_to_piece(const kd_spm *model, int32_t id, char *out, size_t out_size) {
    if (id < 0 || id >= model->processor.GetPieceSize()) return -1;
    const std::string &piece = model->processor.IdToPiece(id);
    if (piece.size() + 1 > out_size) return -1;
    std::memcpy(out, piece.data(), piece.size());
    out[piece.size()] = 0;
    return static_cast<int32_t>(piece.size());
}

extern "C" int32_t kd_spm_encode(const kd_spm *model, const char *text, size_t text_length, int32_t *ids,
                                 size_t capacity, char *error, size_t error_size) {
    try {
        std::vector<int> pieces;
        auto status = model->processor.Encode(std::string(text, text_length), &pieces);
        if (!status.ok()) {
            write_error(error, error_size, status.ToString());
            return -1;
        }
        for (size_t i = 0; i < pieces.size() && i < capacity; i++) ids[i] = pieces[i];
        return static_cast<int32_t>(pieces.size());
    } catch (const std::exception &e) {
        write_error(error, error_size, e.what());
        return -1;
    }
}
