"""Task families: Lightning datamodules plus the module (head + loss + metrics) each needs."""
