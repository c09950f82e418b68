// The gptq C++ API: one include for everything public.
#pragma once

#include <gptq/build.h>
#include <gptq/config.h>
#include <gptq/format.h>
#include <gptq/kernels.h>
#include <gptq/marlin.h>
#include <gptq/quant_linear.h>
#include <gptq/quantize.h>
