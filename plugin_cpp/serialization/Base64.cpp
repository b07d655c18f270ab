#include "Base64.h"
#include "openmm/OpenMMException.h"

using namespace std;

static const char ALPHABET[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

string NNPPlugin::base64Encode(const string& bytes) {
    string text;
    text.reserve(4 * ((bytes.size() + 2) / 3));
    size_t i = 0;
    for (; i + 2 < bytes.size(); i += 3) {
        unsigned int triple = ((unsigned char) bytes[i] << 16) | ((unsigned char) bytes[i + 1] << 8) | (unsigned char) bytes[i + 2];
        text += ALPHABET[(triple >> 18) & 63];
        text += ALPHABET[(triple >> 12) & 63];
        text += ALPHABET[(triple >> 6) & 63];
        text += ALPHABET[triple & 63];
    }
    size_t rest = bytes.size() - i;
    if (rest > 0) {
        unsigned int triple = (unsigned char) bytes[i] << 16;
        if (rest == 2)
            triple |= (unsigned char) bytes[i + 1] << 8;
        text += ALPHABET[(triple >> 18) & 63];
        text += ALPHABET[(triple >> 12) & 63];
        text += (rest == 2 ? ALPHABET[(triple >> 6) & 63] : '=');
        text += '=';
    }
    return text;
}

string NNPPlugin::base64Decode(const string& text) {
    int value[256];
    for (int& v : value)
        v = -1;
    for (int k = 0; k < 64; k++)
        value[(unsigned char) ALPHABET[k]] = k;
    string bytes;
    bytes.reserve(3 * text.size() / 4);
    unsigned int buffer = 0;
    int bits = 0;
    bool ended = false;
    for (char c : text) {
        if (c == ' ' || c == '\n' || c == '\r' || c == '\t')
            continue;
        if (c == '=') {
            ended = true;
            continue;
        }
        int v = value[(unsigned char) c];
        if (v < 0 || ended)
            throw OpenMM::OpenMMException("NNPForce: the model data in the XML is not valid base64.");
        buffer = (buffer << 6) | v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            bytes += (char) ((buffer >> bits) & 0xFF);
        }
    }
    return bytes;
}
