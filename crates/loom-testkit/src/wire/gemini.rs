//! Google Gemini generateContent bodies and stream pieces.
