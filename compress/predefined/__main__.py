"""`python -m compress.predefined` (what `make run` shows until the service exists): plan the seed's AWD-LSTM,
build the sparse layers and check them against dense PyTorch layers loaded with their dense equivalents."""

from __future__ import annotations

import torch

from compress.predefined import SparseEmbedding, SparseLSTM, plan_recurrent


def main() -> None:
    print("Predefined-sparse AWD-LSTM, same recurrent parameters as dense 400-1150-1150-400 (hidden x1.5):")
    print(f"{'layer':<8}{'sparse':>14}{'k':>4}{'delta':>8}{'sparse params':>16}{'dense params':>15}")
    sizes = [(400, 1725, 1.0, 2 / 3), (1725, 1725, 2 / 3, 2 / 3), (1725, 400, 2 / 3, 1.0)]
    total_sparse = total_dense = 0
    for i, (n_in, n_hid, a_in, a_out) in enumerate(sizes):
        plan = plan_recurrent("lstm", n_in, n_hid, a_in, a_out)
        total_sparse += plan.sparse_parameters
        total_dense += plan.dense_parameters
        print(
            f"L{i:<7}{f'{n_in}->{n_hid}':>14}{plan.components:>4}{plan.input_density:>8.3f}"
            f"{plan.sparse_parameters:>16,}{plan.dense_parameters:>15,}"
        )
    print(f"{'total':<30}{total_sparse:>20,}{total_dense:>15,}\n")

    torch.manual_seed(0)
    sparse = SparseLSTM(64, 96, num_layers=2, bidirectional=True, components=4, input_density=0.5).double()
    dense = torch.nn.LSTM(64, 96, num_layers=2, bidirectional=True).double()
    dense.load_state_dict({name: weight for name, (weight, _) in sparse.dense_equivalent().items()})
    x = torch.randn(12, 3, 64, dtype=torch.float64)
    difference = (sparse(x)[0] - dense(x)[0]).abs().max().item()
    kept = sum(p.numel() for p in sparse.parameters())
    print(
        f"SparseLSTM(64, 96, 2 layers, bidirectional, k=4, delta=0.5): {kept:,} parameters "
        f"vs {sum(p.numel() for p in dense.parameters()):,} dense; max |sparse - dense equivalent| = {difference:.1e}"
    )

    embedding = SparseEmbedding(10_000, 200, blocks=10, density=0.25)
    print(
        f"SparseEmbedding(10k words, 200 dims, 10 blocks, density 0.25): words per block "
        f"{list(embedding.words_per_block)}, {sum(p.numel() for p in embedding.parameters()):,} parameters"
    )


if __name__ == "__main__":
    main()
