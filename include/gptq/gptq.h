// The gptq C++ API: one include for everything public.
#pragma once

#include <gptq/build.h>
#include <gptq/format.h>
#include <gptq/kernels.h>
#include <gptq/quant_linear.h>
