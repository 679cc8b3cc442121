"""TranscriptFormer (helical.models.transcriptformer): generative cross-species cell models (CZI).

Per-cell by construction: helical pads every cell to the model's full sequence length (2,047 genes), keeps a
cell's expressed genes in column order (no sampling, no shuffling), pads each batch to a fixed batch size with
empty rows, and the cell embedding is the mean over that cell's own positions divided by the fixed length.
Nothing depends on the other cells of the shard (adapter.py says more).
"""

from __future__ import annotations

from ..family import ModelFamily
from ..profiles import ModelOption, ModelSpec, gpu_only
from . import files

# bf16: the checkpoints were trained and are run by CZI in 16-bit mixed precision ("16-mixed"); helical itself
# runs fp32 (no autocast), the adapter autocasts to the profile's precision on a GPU. Memory caps are host RAM
# for one shard process: the checkpoint (tf_sapiens 1.7 GB, tf_exemplar 3.3 GB, tf_metazoa 4.3 GB of fp32
# tensors, frozen ESM2 gene embeddings included) loaded twice over (state dict + model), plus the shard densified.
FAMILY = ModelFamily(
    name="transcriptformer",
    package=__name__,
    default_model="tf_sapiens",
    files=files.files,
    vocabulary=files.vocabulary,
    adapter="adapter:TranscriptFormerRunner",
    fixture="fixture:build",
    engines=("helical",),
    options=(
        ModelOption(
            name="species",
            default=files.DEFAULT_SPECIES,
            choices=files.ALL_SPECIES,
            help="the cells' species: which vocab .h5 (ESM2 gene embeddings) the genes are looked up in. A species "
            "the model was trained on (tf_sapiens: homo_sapiens; tf_exemplar: its 5; tf_metazoa: 12) runs as is; "
            "tf_metazoa's 4 extra mammals (canis_lupus_familiaris, rattus_norvegicus, sus_scrofa, "
            "macaca_fascicularis) swap in that species' gene embeddings (helical's embedding surgery, CUDA only). "
            "Gene symbols are mapped for homo_sapiens only; other species need their gene ids in var_names",
        ),
        ModelOption(
            name="assay",
            default="unknown",
            help="the sequencing assay, TranscriptFormer's aux token (e.g. \"10x 3' v3\"); one of the model's "
            "vocabs/assay_vocab.json keys. Default: unknown, what helical uses when obs has no assay column",
        ),
    ),  # fmt: skip
    models=(
        ModelSpec(
            name="tf_sapiens",
            family="transcriptformer",
            helical_model_name="tf_sapiens",
            embedding_dim=2048,
            profile=gpu_only("bf16", batch_size=8, memory_cap_gb=12),
            description="TranscriptFormer TF-Sapiens: 57M human cells, 368M trainable parameters (default)",
        ),
        ModelSpec(
            name="tf_exemplar",
            family="transcriptformer",
            helical_model_name="tf_exemplar",
            embedding_dim=2048,
            profile=gpu_only("bf16", batch_size=8, memory_cap_gb=16),
            description="TranscriptFormer TF-Exemplar: human and 4 model organisms, 542M trainable parameters",
        ),
        ModelSpec(
            name="tf_metazoa",
            family="transcriptformer",
            helical_model_name="tf_metazoa",
            embedding_dim=2048,
            profile=gpu_only("bf16", batch_size=8, memory_cap_gb=20),
            description="TranscriptFormer TF-Metazoa: 12 species, 444M trainable parameters",
        ),
    ),  # fmt: skip
    quirks=(
        "helical's TranscriptFormerConfig hard-codes inference_config.device='cuda' (and get_embeddings moves the "
        "model there): the adapter sets it to the run's device after helical builds the config",
        "inference_config.output_path defaults to ./inference_results in the working directory: each call gets its "
        "own temporary folder (and runs with that folder as working directory)",
        "emb_mode='cell' and output_keys=['llh'] as helical's defaults; n_data_workers=0 (helical's config asks for "
        "a forked DataLoader worker per call; the data is already in memory)",
        "species option: the vocab .h5 of the cells' species; out-of-distribution species go through helical's "
        "embedding surgery (pretrained_embedding_species), whose code hard-codes CUDA "
        "(helical/models/transcriptformer/model_dir/embedding_surgery.py:39): on a CPU that combination fails with "
        "E228 before anything loads",
        "helical keeps Ensembl ids verbatim (version suffixes are not stripped, unlike the known-gene check): the "
        "adapter strips them before process_data; symbols are mapped through helical's human table",
        "the assay aux token comes from the assay option (default 'unknown', helical's own default when obs has no "
        "assay column), never from the input's obs (reduced to the cell names), and is checked against "
        "assay_vocab.json (E227)",
        "GPU runs autocast to the profile's precision (bf16); helical itself runs fp32",
        "helical builds its flex-attention block masks without a device, so torch picks the accelerator its wheel "
        "was built for (cuda even on a GPU-less host): while helical runs, its create_block_mask gets the run's device",
        "helical compiles flex attention with torch.compile: a CPU run needs a C++ compiler (g++ or $CXX), E228 "
        "before loading when there is none; the first batch of each process pays the compile",
        "helical takes each cell's expressed genes in column order (sort_genes off), cut to the sequence length: "
        "the column order changed the embedding (issue 22: min per-cell cosine 0.956); the genes reach helical as "
        "Ensembl ids without version, sorted (runner.canonical_input): identical on every layout",
    ),
)
