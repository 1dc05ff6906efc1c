"""ELF and shared-library debugging: static checks and LD_DEBUG traces."""
