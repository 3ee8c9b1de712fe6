"""The SeeSR engine: the diffusion pipeline, its planner, sampler, KDS, tiled VAE and networks."""
