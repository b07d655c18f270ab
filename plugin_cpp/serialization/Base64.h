#ifndef OPENMM_NNP_BASE64_H_
#define OPENMM_NNP_BASE64_H_

#include <string>

namespace NNPPlugin {

/** RFC 4648 base64 (standard alphabet, '=' padding), used to embed model bytes in XML. */
std::string base64Encode(const std::string& bytes);
/** Decode base64; whitespace is ignored, any other character outside the alphabet is an error. */
std::string base64Decode(const std::string& text);

} // namespace NNPPlugin

#endif /*OPENMM_NNP_BASE64_H_*/
