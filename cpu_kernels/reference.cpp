// scalar reference kernels (being written)
