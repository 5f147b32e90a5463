// The Vulkan API without its prototypes: the loader (libvulkan.so.1) is opened at run time and every entry point is
// resolved through vkGetInstanceProcAddr / vkGetDeviceProcAddr, so the binary starts on hosts without Vulkan.
#define VK_NO_PROTOTYPES 1
#include <vulkan/vulkan.h>
