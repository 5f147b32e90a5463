import Foundation
import Tensor

/// Model configurations `model init-random` can build.
public enum ModelPreset: String, CaseIterable, Sendable {
    /// The conformance fixtures' tiny model (its `model.json`, unchanged): seconds to build and run.
    case tiny
    /// The real Kandinsky 2.0 sizes (`CONFIG_2_0`, XLM-R large M-CLIP, mT5-small encoder): 1.22B-parameter UNet.
    case full

    /// The preset's `model.json` text.
    public var modelJSON: String {
        switch self {
        case .tiny: return Self.tinyJSON
        case .full: return Self.fullJSON
        }
    }

    public var config: ModelConfig {
        // The literals below are checked by the tests; a failure here is a programming error.
        try! ModelConfig.decode(Data(modelJSON.utf8), path: "preset \(rawValue)")
    }

    static let tinyJSON = """
        {
          "diffusion": {
            "learn_sigma": true,
            "linear_end": 0.02,
            "linear_start": 0.0001,
            "noise_schedule": "linear",
            "predict_xstart": false,
            "rescale_learned_sigmas": true,
            "rescale_timesteps": true,
            "sigma_small": false,
            "steps": 1000,
            "timestep_respacing": "",
            "use_kl": false
          },
          "format": "kandinsky-2.0",
          "text_encoder1": {
            "linear_out_features": 40,
            "xlm_roberta": {
              "bos_token_id": 0,
              "eos_token_id": 2,
              "hidden_act": "gelu",
              "hidden_size": 48,
              "intermediate_size": 192,
              "layer_norm_eps": 1e-05,
              "max_position_embeddings": 514,
              "num_attention_heads": 4,
              "num_hidden_layers": 2,
              "pad_token_id": 1,
              "position_embedding_type": "absolute",
              "type_vocab_size": 1,
              "vocab_size": 3002
            }
          },
          "text_encoder2": {
            "mt5": {
              "d_ff": 128,
              "d_kv": 16,
              "d_model": 512,
              "eos_token_id": 1,
              "feed_forward_proj": "gated-gelu",
              "is_encoder_decoder": false,
              "layer_norm_epsilon": 1e-06,
              "num_heads": 4,
              "num_layers": 2,
              "pad_token_id": 0,
              "relative_attention_max_distance": 128,
              "relative_attention_num_buckets": 32,
              "tie_word_embeddings": false,
              "vocab_size": 3000
            }
          },
          "unet": {
            "attention_resolutions": "32,16",
            "cache_text_emb": false,
            "channel_mult": "1,2,2",
            "dropout": 0,
            "image_size": 64,
            "in_channels": 4,
            "inpainting": false,
            "model_dim": 64,
            "num_channels": 32,
            "num_head_channels": 16,
            "num_heads": 1,
            "num_heads_upsample": -1,
            "num_res_blocks": 1,
            "out_channels": 8,
            "pooling_type": "from_model",
            "resblock_updown": true,
            "text_encoder_in_dim1": 48,
            "text_encoder_in_dim2": 40,
            "up": false,
            "use_fp16": false,
            "use_scale_shift_norm": true
          },
          "vae": {
            "ddconfig": {
              "attn_resolutions": [],
              "ch": 32,
              "ch_mult": [
                1,
                2
              ],
              "double_z": true,
              "dropout": 0.0,
              "in_channels": 3,
              "num_res_blocks": 1,
              "out_ch": 3,
              "resolution": 64,
              "z_channels": 4
            },
            "embed_dim": 4,
            "scale": 0.0512
          }
        }
        """

    static let fullJSON = """
        {
          "diffusion": {
            "learn_sigma": true,
            "linear_end": 0.02,
            "linear_start": 0.0001,
            "noise_schedule": "linear",
            "predict_xstart": false,
            "rescale_learned_sigmas": true,
            "rescale_timesteps": true,
            "sigma_small": false,
            "steps": 1000,
            "timestep_respacing": "",
            "use_kl": false
          },
          "format": "kandinsky-2.0",
          "text_encoder1": {
            "linear_out_features": 640,
            "xlm_roberta": {
              "bos_token_id": 0,
              "eos_token_id": 2,
              "hidden_act": "gelu",
              "hidden_size": 1024,
              "intermediate_size": 4096,
              "layer_norm_eps": 1e-05,
              "max_position_embeddings": 514,
              "num_attention_heads": 16,
              "num_hidden_layers": 24,
              "pad_token_id": 1,
              "position_embedding_type": "absolute",
              "type_vocab_size": 1,
              "vocab_size": 250002
            }
          },
          "text_encoder2": {
            "mt5": {
              "d_ff": 1024,
              "d_kv": 64,
              "d_model": 512,
              "eos_token_id": 1,
              "feed_forward_proj": "gated-gelu",
              "is_encoder_decoder": false,
              "layer_norm_epsilon": 1e-06,
              "num_heads": 6,
              "num_layers": 8,
              "pad_token_id": 0,
              "relative_attention_max_distance": 128,
              "relative_attention_num_buckets": 32,
              "tie_word_embeddings": false,
              "vocab_size": 250112
            }
          },
          "unet": {
            "attention_resolutions": "32,16,8",
            "cache_text_emb": true,
            "channel_mult": "",
            "dropout": 0,
            "image_size": 64,
            "in_channels": 4,
            "inpainting": false,
            "model_dim": 768,
            "num_channels": 384,
            "num_head_channels": 64,
            "num_heads": 1,
            "num_heads_upsample": -1,
            "num_res_blocks": 3,
            "out_channels": 8,
            "pooling_type": "from_model",
            "resblock_updown": true,
            "text_encoder_in_dim1": 1024,
            "text_encoder_in_dim2": 640,
            "up": false,
            "use_fp16": false,
            "use_scale_shift_norm": true
          },
          "vae": {
            "ddconfig": {
              "attn_resolutions": [],
              "ch": 128,
              "ch_mult": [
                1,
                2,
                4,
                4
              ],
              "double_z": true,
              "dropout": 0.0,
              "in_channels": 3,
              "num_res_blocks": 2,
              "out_ch": 3,
              "resolution": 256,
              "z_channels": 4
            },
            "embed_dim": 4,
            "scale": 0.0512
          }
        }
        """
}
