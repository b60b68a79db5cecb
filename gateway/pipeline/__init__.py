"""The request pipeline: each module is one stage (limits, cache, signing, upstream)."""
