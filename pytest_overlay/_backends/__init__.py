"""The mechanisms that mount a union (kernel, userns, fuse, copy), and the ladder."""
