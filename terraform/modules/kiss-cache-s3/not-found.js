// kiss CDN: answers every request routed here (gcroots/, .kiss/ and any key
// that is not a cache object a substituter fetches) with 404 at the edge,
// before any cache lookup or request to the bucket.
function handler(event) {
  return { statusCode: 404, statusDescription: "Not Found" };
}
