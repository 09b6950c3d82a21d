"""Decoders behind one contract: the transformers loop, ChatCore's fast Llama decoder, remote servers."""
