"""The networks of SeeSR: the SeeSR UNet, its ControlNet and the RAM + DAPE tagger, one module each."""
