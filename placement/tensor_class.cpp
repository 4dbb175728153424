// tensor classes (being written)
