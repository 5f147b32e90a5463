#ifndef KD_COPENBLAS_SHIM_H
#define KD_COPENBLAS_SHIM_H
// OpenBLAS's CBLAS interface (Debian: libopenblas-dev, pthread flavour), plus its thread controls.
#include <cblas.h>
#endif
